"""Noticing the dead: the lead pings its workers, workers ping their server, every rank watches the
torchrun agent that started it.

torch RPC has no membership events: a peer that dies is only noticed when something is sent to it. So
pings go about once a second each way; a dead process fails the ping at once (its connection is reset), a
vanished or cut-off node after `rpc.liveness_timeout_s` without an answer, however long a push may take.
And torchrun starts each rank in a session of its own, so a rank whose agent was killed would train on
as an orphan: it watches its parent instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import torch

from distributed_a3c.distributed import rpc as rpc_edge
from distributed_a3c.server import WorkerRoster

log = logging.getLogger(__name__)

PING_INTERVAL_S = 1.0
PARENT_POLL_S = 1.0


class PeerWatch:
    """Pings `peers()` every `interval_s` from a thread of its own; a peer that does not answer a ping
    within `timeout_s` (rpc.liveness_timeout_s) makes `on_lost(peer, reason)` be called, once per loss.

    A peer that is only slow still answers: pings are served by its RPC threads, whatever its main thread
    is busy with. `ping(peer, timeout_s)` returns a future (rpc_edge.ping_async; tests give their own).
    """

    def __init__(
        self,
        peers: Callable[[], list[int]],
        ping: Callable[[int, float], torch.futures.Future],
        timeout_s: float,
        on_lost: Callable[[int, str], None],
        interval_s: float = PING_INTERVAL_S,
        name: str = "peer-watch",
    ) -> None:
        self.peers, self.ping, self.timeout_s, self.on_lost = peers, ping, timeout_s, on_lost
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> PeerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            futures = {peer: self.ping(peer, self.timeout_s) for peer in self.peers()}
            for peer, future in futures.items():
                try:
                    future.wait()
                except Exception as e:
                    if self._stop.is_set():  # stopping: the peer may be leaving in good order
                        return
                    text = str(e).strip()
                    self.on_lost(peer, text.splitlines()[0] if text else type(e).__name__)


def worker_monitor(roster: WorkerRoster, timeout_s: float, on_lost: Callable[[int, str], None]) -> PeerWatch:
    """On the lead (or a node's aggregator): watch every pending rank that pushes to it; `on_lost(rank,
    reason)` once per rank lost."""

    def lost(rank: int, reason: str) -> None:
        if roster.lose(rank, reason):  # False for a rank that left in good order meanwhile
            on_lost(rank, reason)

    return PeerWatch(roster.pending, rpc_edge.ping_async, timeout_s, lost, name="worker-monitor")


def upstream_watch(rank: int, timeout_s: float, on_lost: Callable[[int, str], None]) -> PeerWatch:
    """On a worker or an aggregator: watch what it pushes to (the server shards, or its node's aggregator);
    a partition or a frozen peer is noticed in `timeout_s`, not when a push times out (rpc.timeout_s)."""
    peers = rpc_edge.upstream_ranks(rank)
    return PeerWatch(lambda: peers, rpc_edge.ping_async, timeout_s, on_lost, name="upstream-watch")


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
