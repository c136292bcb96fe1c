"""The parameter server of mode=sync (synchronous A2C; PAAC, rlpyt's synchronous mode): one averaged step
per weight version.

Every living worker pushes the gradient of weight version v; each push is held until all of them are in,
then their mean is applied in one step and every push is answered with version v + 1. No gradient is ever
stale. A lost worker is no longer waited for (`release_waiting`).
"""

from __future__ import annotations

import torch

from distributed_a3c.messages import GradientPush, WeightsReply
from distributed_a3c.server.params import ParameterServer


class SynchronousServer(ParameterServer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: list[tuple[GradientPush, torch.futures.Future[WeightsReply]]] = []

    def push_synchronous(self, req: GradientPush, expected: int) -> torch.futures.Future[WeightsReply]:
        """Hold the push until `expected` pushes of this weight version are in, then apply their mean in one
        step and answer them all; the future completes then."""
        future: torch.futures.Future[WeightsReply] = torch.futures.Future()
        with self._lock, self._busy():
            if self.stop_reason is not None:
                future.set_result(self._reply(req, "stopped"))
                return future
            status = self._take(req)
            if status is None and req.version != self.version:  # cannot happen when every worker waits
                status = "dropped"
                self.dropped += 1
            if status is not None:
                future.set_result(self._reply(req, status))
                return future
            self._accum.add_(self._master_dtype(req.grads))
            self._waiting.append((req, future))
            answers = self._step_if_complete(expected)
        _answer(answers)
        return future

    def release_waiting(self, expected: int) -> None:
        """Fewer workers are expected now (one was lost): step if those left are all in."""
        with self._lock, self._busy():
            answers = self._step_if_complete(expected)
        _answer(answers)

    def request_stop(self, reason: str) -> None:
        """Stop; the pushes still waiting for their step are answered "stopped" (not applied)."""
        super().request_stop(reason)
        with self._lock:
            answers = [(future, self._reply(req, "stopped")) for req, future in self._waiting]
            self._waiting.clear()
        _answer(answers)

    def _step_if_complete(self, expected: int) -> list:
        if not self._waiting or len(self._waiting) < expected:
            return []
        self._step(self._accum.div_(len(self._waiting)), len(self._waiting))
        self._accum.zero_()
        answers = [(future, self._reply(req, "applied")) for req, future in self._waiting]
        self._waiting.clear()
        return answers


def _answer(answers: list) -> None:
    """Complete futures outside the lock: completing one may run its RPC reply at once."""
    for future, reply in answers:
        future.set_result(reply)
