"""GA3C's predictor (Babaeizadeh et al. 2017): the observations of every worker, batched into one forward pass.

Each request is one worker's step: its envs' observations. A pass takes the requests waiting, and more as
they come, until every living worker has asked, `max_batch` observations are in, or `max_wait_ms` has
passed since its first request; then it answers each request with its rows of the actions.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import torch

from distributed_a3c.messages import ActionReply

log = logging.getLogger(__name__)

Request = tuple[int, torch.Tensor, torch.futures.Future]


class BatchingPredictor:
    """Answers `predict(rank, obs)` futures from a thread of its own, with `act(rank, batched_obs)`;
    `request_error(rank, obs)` says why a request is rejected (answered at once, never batched)."""

    def __init__(
        self,
        act: Callable[[int, torch.Tensor], ActionReply],
        request_error: Callable[[int, torch.Tensor], str | None],
        workers_alive: Callable[[], int],
        max_batch: int = 0,
        max_wait_ms: float = 1.0,
    ) -> None:
        self._act = act
        self._request_error = request_error
        self._workers_alive = workers_alive
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self._requests: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="predictor", daemon=True)
        self.passes = 0
        self.requests = 0

    def start(self) -> BatchingPredictor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5)

    def predict(self, rank: int, obs: torch.Tensor) -> torch.futures.Future[ActionReply]:
        """Actions for one worker's observations, once a forward pass has them; rejected ones at once."""
        future: torch.futures.Future[ActionReply] = torch.futures.Future()
        error = self._request_error(rank, obs)
        if error is not None:
            future.set_result(ActionReply(-1, None, error=error))
        else:
            self._requests.put((rank, obs, future))
        return future

    def _serve(self) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            try:
                self._answer(batch)
            except Exception as e:  # a bad request must not take the predictor down with it
                log.warning("predictor pass of %d requests failed: %s", len(batch), e)
                for _, _, future in batch:
                    future.set_exception(e)
            if stop:
                return

    def _gather(self, first: Request) -> tuple[list[Request], bool]:
        batch, rows = [first], first[1].shape[0]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self._workers_alive() and not (self.max_batch and rows >= self.max_batch):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                request = self._requests.get(timeout=remaining)
            except queue.Empty:
                break
            if request is None:
                return batch, True
            batch.append(request)
            rows += request[1].shape[0]
        return batch, False

    def _answer(self, batch: list[Request]) -> None:
        sizes = [obs.shape[0] for _, obs, _ in batch]
        obs = batch[0][1] if len(batch) == 1 else torch.cat([obs for _, obs, _ in batch])
        reply = self._act(batch[0][0], obs)
        self.passes += 1
        self.requests += len(batch)
        pieces = zip(batch, reply.actions.split(sizes), reply.log_probs.split(sizes), strict=True)
        for (_, _, future), actions, log_probs in pieces:
            future.set_result(ActionReply(reply.version, actions, log_probs, reply.stop))
