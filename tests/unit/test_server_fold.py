"""server.fold: concurrent pushes are summed into shared optimizer steps; nothing is lost or doubled."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from distributed_a3c.config import Config, ConfigError, validate
from distributed_a3c.envs import make_vector_env
from distributed_a3c.messages import GradientPush
from distributed_a3c.models import build_model
from distributed_a3c.server import ParameterServer


def _server(fold: bool) -> ParameterServer:
    cfg = Config()
    cfg.server.fold = fold
    cfg.optim.name = "rmsprop"  # any optimizer: the test watches the gradients handed to it
    validate(cfg)
    probe = make_vector_env(cfg.env, 1, 0)
    model = build_model(cfg, probe.single_observation_space, probe.single_action_space)
    return ParameterServer(model, cfg.optim, cfg.server, cfg.train)


def _push_concurrently(
    server: ParameterServer, pushes: int, threads: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """`pushes` pushes from `threads` threads, each with its own random gradient; a slow optimizer step."""
    applied: list[torch.Tensor] = []
    step = server._step

    def slow_step(grads: torch.Tensor, pushes: int = 1, staleness_factor: float = 1.0) -> None:
        applied.append(grads.clone())
        time.sleep(0.005)  # a big model's step: pushes pile up behind it
        step(grads, pushes, staleness_factor)

    server._step = slow_step  # type: ignore[method-assign]
    gens = [torch.Generator().manual_seed(i) for i in range(threads)]
    sent: list[torch.Tensor] = []
    statuses: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for _ in range(pushes // threads):
            g = torch.randn(server.num_params, generator=gens[i])
            with lock:
                sent.append(g)
            reply = server.push(GradientPush(rank=i + 1, version=server.version, grads=g, env_steps=1))
            with lock:
                statuses.append(reply.status)

    ts = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in ts), "a client thread is still pushing after 60 s"
    assert statuses == ["applied"] * pushes, statuses  # an exception in a thread would leave one missing
    return sent, applied


def test_folding_shares_steps_and_conserves_the_gradient() -> None:
    server = _server(fold=True)
    sent, applied = _push_concurrently(server, pushes=64, threads=8)
    assert len(sent) == 64
    assert len(applied) < 64, "with 8 clients behind a slow step, pushes must share steps"
    assert server.version == len(applied)
    # Every pushed gradient was applied exactly once: the folded sums add up to the sum of the pushes.
    torch.testing.assert_close(torch.stack(applied).sum(0), torch.stack(sent).sum(0), rtol=1e-4, atol=1e-3)


def test_without_folding_every_push_is_its_own_step() -> None:
    server = _server(fold=False)
    sent, applied = _push_concurrently(server, pushes=32, threads=4)
    assert len(applied) == len(sent) == 32 == server.version


def test_fold_and_accumulate_exclude_each_other() -> None:
    cfg = Config()
    cfg.server.fold, cfg.server.accumulate = True, 4
    with pytest.raises(ConfigError, match="server.fold"):
        validate(cfg)
