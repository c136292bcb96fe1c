"""Which workers a job still has: alive, lost (and why), or gone after being told to stop.

Plain bookkeeping, thread-safe, no processes: the lead's liveness monitor and its RPC endpoint feed it,
the run loop reads it. A3C trains on with the workers it has; the end of a run waits only for the living.
"""

from __future__ import annotations

import threading


class WorkerRoster:
    def __init__(self, ranks: range | list[int]) -> None:
        self.ranks = list(ranks)
        self.lost: dict[int, str] = {}
        """Rank -> why it was given up (its process or node died, or stopped answering)."""
        self.departed: set[int] = set()
        """Ranks that said goodbye after their stop reply."""
        self._changed = threading.Condition()

    def lose(self, rank: int, reason: str) -> bool:
        """Record that `rank` is gone; True the first time (the caller says so once)."""
        with self._changed:
            if rank in self.lost or rank in self.departed:
                return False
            self.lost[rank] = reason
            self._changed.notify_all()
            return True

    def revive(self, rank: int) -> bool:
        """`rank` was lost but is heard from again (a partition healed, a frozen process resumed): it counts
        as alive again. True the first time (the caller says so once)."""
        with self._changed:
            if rank not in self.lost:
                return False
            del self.lost[rank]
            self._changed.notify_all()
            return True

    def depart(self, rank: int) -> None:
        with self._changed:
            self.departed.add(rank)
            self._changed.notify_all()

    def pending(self) -> list[int]:
        """Ranks neither lost nor departed: the ones to watch, and to wait for at the end."""
        with self._changed:
            return self._pending_locked()

    @property
    def alive(self) -> int:
        """Workers not lost (a departed worker left in good order and still counts as having lived)."""
        with self._changed:
            return len(self.ranks) - len(self.lost)

    def wait_all_departed(self, timeout_s: float) -> bool:
        """Block until every worker not lost has departed (or `timeout_s`); True if they all did."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending_locked(), timeout=timeout_s)

    def _pending_locked(self) -> list[int]:
        return [r for r in self.ranks if r not in self.lost and r not in self.departed]
