"""One aggregator per node (server.node_aggregate, BA3C's node-level batching): the node's workers push to
it, it sums the gradients of a window into one push to the (sharded) server and hands the fresh weights of
the reply back to each of them: one upload and one download per node and window instead of per worker.

A window closes when every living local worker has pushed, or `window_s` after its first push; pushes
that arrive while a window is forwarded wait for the next one. Every local push is validated as the
server would validate it; a bad one is answered "rejected" and never forwarded. Callable in-process (tests)
or behind RPC (distributed/), like the servers.
"""

from __future__ import annotations

import logging
import queue
import threading

import torch

from distributed_a3c.messages import GradientPush, ParameterStore, WeightsReply
from distributed_a3c.rl.normalize import RunningMeanStd
from distributed_a3c.server.validation import push_error

log = logging.getLogger(__name__)

Waiting = list[tuple[GradientPush, torch.futures.Future[WeightsReply]]]


class NodeAggregator:
    def __init__(
        self,
        rank: int,
        upstream: ParameterStore,
        local_workers: list[int],
        numel: int,
        env_steps_per_push: int | None,
        window_s: float,
    ) -> None:
        self.rank, self.upstream, self.numel = rank, upstream, numel
        self.env_steps_per_push = env_steps_per_push
        self.window_s = window_s
        self.expected = set(local_workers)
        """Local workers whose push a window waits for (the lost ones are dropped)."""
        self.local_workers = list(local_workers)
        self._lock = threading.Lock()
        self._window: Waiting = []
        self._forwarding = False
        self._timer: threading.Timer | None = None
        self.latest: WeightsReply | None = None
        """The upstream's latest reply, with the full weights (what a local worker's reply is made of)."""
        self.stopped = threading.Event()
        self.forwarded = 0
        self.rejected = 0
        # Windows are forwarded on a thread of their own: a local push returns its future at once.
        self._ready: queue.SimpleQueue[Waiting] = queue.SimpleQueue()
        threading.Thread(target=self._forwarder, name="aggregator-forward", daemon=True).start()

    # ----- what local workers call -------------------------------------------------------------------
    def pull(self, rank: int | None = None) -> WeightsReply:
        with self._lock:
            latest = self.latest
        if latest is None:
            latest = self._take_reply(self.upstream.pull(self.rank))
        return _for_worker(latest, version=-1)

    def push_async(self, req: GradientPush) -> torch.futures.Future[WeightsReply]:
        """Answered once the window holding `req` has been forwarded and the server has replied."""
        future: torch.futures.Future[WeightsReply] = torch.futures.Future()
        with self._lock:
            latest = self.latest
            version = latest.version if latest is not None else 0
            shape = None if latest is None or latest.obs_stats is None else latest.obs_stats.mean.shape
            error = push_error(req, version, self.numel, self.local_workers, self.env_steps_per_push, shape)
            if error is not None:
                self.rejected += 1
                log.warning("rejected push from rank %r at the node's aggregator: %s", getattr(req, "rank", "?"), error)
            elif self.stopped.is_set():
                error = "stopped"
            else:
                self._window.append((req, future))
                ready = self._take_window_if_complete()
                if len(self._window) == 1 and ready is None:
                    self._arm_timer()
        if error is not None:
            status = "stopped" if error == "stopped" else "rejected"
            future.set_result(_for_worker(latest, req.version if isinstance(req, GradientPush) else -1, status))
            return future
        if ready is not None:
            self._ready.put(ready)
        return future

    def push(self, req: GradientPush) -> WeightsReply:
        return self.push_async(req).wait()

    def lose(self, rank: int) -> None:
        """A local worker is gone: windows no longer wait for it."""
        with self._lock:
            self.expected.discard(rank)
            ready = self._take_window_if_complete()
        if ready is not None:
            self._ready.put(ready)

    # ----- windows --------------------------------------------------------------------------------------
    def _take_window_if_complete(self, timed_out: bool = False) -> Waiting | None:
        """The window to forward now (call with the lock held), or None."""
        if self._forwarding or not self._window:
            return None
        pushed = {req.rank for req, _ in self._window}
        if not timed_out and not self.expected <= pushed:
            return None
        window, self._window = self._window, []
        self._forwarding = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return window

    def _arm_timer(self) -> None:
        self._timer = threading.Timer(self.window_s, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            ready = self._take_window_if_complete(timed_out=True)
        if ready is not None:
            self._ready.put(ready)

    def _forwarder(self) -> None:
        """Forward windows one after another, as long as one is ready when the previous one is answered."""
        while True:
            window: Waiting | None = self._ready.get()
            while window is not None:
                window = self._forward_one(window)

    def _forward_one(self, window: Waiting) -> Waiting | None:
        """Sum the window's pushes into one, push it upstream, answer each local push from the reply; the
        next window if it is ready meanwhile."""
        reqs = [req for req, _ in window]
        with self._lock:
            shard_versions = self.latest.shard_versions if self.latest is not None else None
        obs_stats: RunningMeanStd | None = None
        for req in reqs:
            if req.obs_stats is not None:
                obs_stats = req.obs_stats.copy() if obs_stats is None else obs_stats.merge_(req.obs_stats)
        keys = {k for req in reqs for k in req.stats}
        push = GradientPush(
            rank=self.rank,
            version=min(req.version for req in reqs),
            grads=torch.stack([req.grads.float() for req in reqs]).sum(0).to(reqs[0].grads.dtype),
            env_steps=sum(req.env_steps for req in reqs),
            episode_returns=[r for req in reqs for r in req.episode_returns],
            episode_lengths=[n for req in reqs for n in req.episode_lengths],
            stats={k: sum(req.stats.get(k, 0.0) for req in reqs) / len(reqs) for k in keys}
            | {"aggregator/pushes_per_forward": float(len(reqs))},
            obs_stats=obs_stats,
            shard_versions=shard_versions,
        )
        try:
            reply = self._take_reply(self.upstream.push(push))
            self.forwarded += 1
            answers = [(future, _for_worker(reply, req.version, reply.status)) for req, future in window]
        except Exception as e:  # the server is gone: every local push learns it
            answers = [(future, e) for _, future in window]
        with self._lock:
            self._forwarding = False
            ready = self._take_window_if_complete()
            if ready is None and self._window and self._timer is None:
                self._arm_timer()
        for future, answer in answers:
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
        return ready

    def _take_reply(self, reply: WeightsReply) -> WeightsReply:
        """Keep the upstream's reply with full weights (a reply without them keeps the ones held)."""
        with self._lock:
            if reply.weights is None and self.latest is not None:
                reply = WeightsReply(
                    reply.version, self.latest.weights, reply.stop, reply.status, reply.obs_stats, reply.shard_versions
                )
            elif reply.weights is not None:
                reply.weights = reply.weights.clone()  # a sharded store's buffer is reused by its next push
            self.latest = reply
            if reply.stop:
                self.stopped.set()
            return reply


def _for_worker(latest: WeightsReply | None, version: int, status: str = "pulled") -> WeightsReply:
    """A local worker's answer: the weights only when it does not hold that version already."""
    if latest is None:
        return WeightsReply(0, None, True, status)
    weights = latest.weights if version != latest.version else None
    return WeightsReply(latest.version, weights, latest.stop, status, latest.obs_stats, None)
