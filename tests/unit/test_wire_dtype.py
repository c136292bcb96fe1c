"""server.wire_dtype: gradients and weights travel in bf16/fp16; the master copy stays float32."""

from __future__ import annotations

import pytest
import torch

from distributed_a3c.config import Config, validate
from distributed_a3c.envs import make_vector_env
from distributed_a3c.messages import GradientPush
from distributed_a3c.models import build_model
from distributed_a3c.server import ParameterServer
from distributed_a3c.worker import Worker


def _pair(wire_dtype: str) -> tuple[ParameterServer, Worker, list[GradientPush]]:
    cfg = Config()
    cfg.server.wire_dtype = wire_dtype
    cfg.worker.envs_per_worker = 4
    validate(cfg)
    probe = make_vector_env(cfg.env, 1, 0)
    server = ParameterServer(
        build_model(cfg, probe.single_observation_space, probe.single_action_space), cfg.optim, cfg.server, cfg.train
    )
    sent: list[GradientPush] = []
    push = server.push

    def recording_push(request: GradientPush):
        sent.append(request)
        return push(request)

    server.push = recording_push  # type: ignore[method-assign]
    worker = Worker(cfg, 1, server)
    worker._apply(server.pull())
    return server, worker, sent


@pytest.mark.parametrize(
    ("wire_dtype", "dtype", "rtol"), [("bfloat16", torch.bfloat16, 1e-2), ("float16", torch.float16, 1e-3)]
)
def test_half_precision_round_trip_stays_within_tolerance(wire_dtype: str, dtype: torch.dtype, rtol: float) -> None:
    server, worker, sent = _pair(wire_dtype)
    assert server.pull().weights.dtype == dtype
    for _ in range(5):
        worker.step()
    assert all(r.grads.dtype == dtype for r in sent)
    # The server applied every push (none rejected) and keeps float32 master weights and optimizer state.
    assert server.version == 5 and server.rejected == 0
    assert server.flat.weights.dtype == torch.float32
    # The worker acts with the master weights rounded to the wire dtype, nothing further off.
    torch.testing.assert_close(worker.flat.weights, server.flat.weights, rtol=rtol, atol=1e-3)
    assert torch.equal(worker.flat.weights, server.flat.weights.to(dtype).float())


def test_float32_wire_is_exact() -> None:
    server, worker, sent = _pair("float32")
    for _ in range(3):
        worker.step()
    assert all(r.grads.dtype == torch.float32 for r in sent)
    assert torch.equal(worker.flat.weights, server.flat.weights)
