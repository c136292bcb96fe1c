"""Noticing the dead: the lead pings its workers, every rank watches the torchrun agent that started it.

torch RPC has no membership events: a worker that dies is only noticed when something is sent to it. The
lead therefore pings each living worker about once a second; a dead process fails the ping at once (its
connection is reset), a vanished node at `rpc.timeout_s`. And torchrun starts each rank in a session of
its own, so a rank whose agent was killed would train on as an orphan: it watches its parent instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from distributed_a3c.distributed import rpc as rpc_edge
from distributed_a3c.server import WorkerRoster

log = logging.getLogger(__name__)

PING_INTERVAL_S = 1.0
PARENT_POLL_S = 1.0


class WorkerMonitor:
    """On the lead: ping every pending worker each `interval_s`; `on_lost(rank, reason)` once per loss."""

    def __init__(
        self,
        roster: WorkerRoster,
        shards: int,
        timeout_s: float,
        on_lost: Callable[[int, str], None],
        interval_s: float = PING_INTERVAL_S,
    ) -> None:
        self.roster = roster
        self.shards = shards
        self.timeout_s = timeout_s
        self.on_lost = on_lost
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-monitor", daemon=True)

    def start(self) -> WorkerMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            ranks = self.roster.pending()
            futures = {r: rpc_edge.ping_async(r, self.shards, self.timeout_s) for r in ranks}
            for rank, future in futures.items():
                try:
                    future.wait()
                except Exception as e:
                    if self._stop.is_set():
                        return
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    if self.roster.lose(rank, reason):  # False for a rank that left in good order
                        self.on_lost(rank, reason)


def watch_parent(on_orphaned: Callable[[int], None], poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """Call `on_orphaned(old_parent_pid)` once, from a daemon thread, when this process's parent dies."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        on_orphaned(parent)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
