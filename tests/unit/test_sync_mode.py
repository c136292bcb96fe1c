"""mode=sync (synchronous A2C, PAAC): the gradients of every living worker for one weight version are
averaged into one step; each push is answered only then, so no gradient is ever stale."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from distributed_a3c.config import Config, ConfigError, OptimConfig, ServerConfig, TrainConfig, validate
from distributed_a3c.messages import GradientPush
from distributed_a3c.server import SynchronousServer
from distributed_a3c.server.optim import FlatOptimizer
from distributed_a3c.trainer import run_serial

NO_STOP = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None)


def _server() -> SynchronousServer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    return SynchronousServer(model, OptimConfig(), ServerConfig(), NO_STOP, worker_ranks=range(1, 4))


def _grad(server: SynchronousServer, seed: int) -> torch.Tensor:
    return torch.randn(server.num_params, generator=torch.Generator().manual_seed(seed))


def test_three_pushes_make_one_step_with_their_mean():
    server = _server()
    before = server.flat.weights.clone()
    grads = [_grad(server, k) for k in range(3)]
    futures = [server.push_synchronous(GradientPush(1 + k, 0, grads[k], env_steps=10), 3) for k in range(2)]
    assert not any(f.done() for f in futures) and server.version == 0, "a step before every worker pushed"
    futures.append(server.push_synchronous(GradientPush(3, 0, grads[2], env_steps=10), 3))
    replies = [f.wait() for f in futures]
    assert [(r.status, r.version) for r in replies] == [("applied", 1)] * 3
    expected = before.clone()
    FlatOptimizer(expected, OptimConfig()).step(torch.stack(grads).mean(0))
    torch.testing.assert_close(server.flat.weights, expected)
    assert server.stats.staleness_summary()["max"] == 0


def test_a_lost_worker_no_longer_holds_the_step():
    server = _server()
    futures = [server.push_synchronous(GradientPush(1 + k, 0, _grad(server, k), env_steps=10), 3) for k in range(2)]
    assert not any(f.done() for f in futures)
    server.release_waiting(2)  # rank 3 was lost: two workers are expected now
    assert [f.wait().version for f in futures] == [1, 1]


def test_the_stop_answers_the_pushes_still_waiting():
    server = _server()
    future = server.push_synchronous(GradientPush(1, 0, _grad(server, 0), env_steps=10), 2)
    server.request_stop("interrupted")
    reply = future.wait()
    assert reply.stop and reply.status == "stopped" and server.version == 0


def test_sync_mode_refuses_what_would_split_or_delay_its_step():
    cfg = Config(mode="sync", server=ServerConfig(accumulate=2))
    with pytest.raises(ConfigError, match=r"server.accumulate=2 is invalid: must be 0 or 1 for mode=sync"):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"mode=.async. is invalid: must be one of grad, data, sync, central"):
        validate(Config(mode="async"))


def test_sync_mode_solves_cartpole_in_process_and_is_never_stale(tmp_path):
    cfg = validate(Config(mode="sync"))
    cfg.logger.wandb.mode = "disabled"
    cfg.logger.progress = False
    cfg.train.max_minutes = 2
    summary = run_serial(cfg, tmp_path, OmegaConf.to_container(OmegaConf.structured(cfg)), workers=2)
    assert summary["exit_reason"] == "target_return" and summary["mean_return_100"] >= 475, summary
    assert summary["staleness"]["max"] == 0
    assert summary["weight_version"] * 2 == sum(summary["pushes_per_rank"].values())  # one step per 2 pushes
