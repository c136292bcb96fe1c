"""A push is validated whole before any of it counts: a rejected push changes no weight and no statistic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distributed_a3c.config import OptimConfig, ServerConfig, TrainConfig
from distributed_a3c.messages import GradientPush
from distributed_a3c.rl.normalize import RunningMeanStd
from distributed_a3c.server import ParameterServer

PER_PUSH = 40  # a worker's rollout_len x envs_per_worker


def _server(target_return: float | None = 10.0) -> ParameterServer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    train = TrainConfig(total_env_steps=10**9, target_return=target_return, max_minutes=None)
    return ParameterServer(
        model, OptimConfig(), ServerConfig(), train, worker_ranks=range(1, 3), env_steps_per_push=PER_PUSH
    )


def _valid(server: ParameterServer, **changes) -> GradientPush:
    fields = {
        "rank": 1,
        "version": server.version,
        "grads": torch.full((server.num_params,), 0.01),
        "env_steps": PER_PUSH,
        "episode_returns": [5.0],
        "episode_lengths": [12],
        "obs_stats": RunningMeanStd(np.zeros(4), np.ones(4), 8.0),
    }
    return GradientPush(**{**fields, **changes})


def _counters(server: ParameterServer) -> tuple:
    obs = None if server.obs_stats is None else (server.obs_stats.mean.copy(), server.obs_stats.count)
    return (
        server.version,
        server.stats.env_steps,
        server.stats.episodes,
        list(server.stats.returns),
        repr(obs),
        sum(server.stats.pushes_by_rank.values()),
    )


def test_a_nan_gradient_with_a_huge_return_is_rejected_and_cannot_end_training():
    """What a corrupted worker could do before: its returns counted, then its gradient was refused."""
    server = _server(target_return=10.0)
    for _ in range(99):  # 99 real episodes of return 5: one short of the 100-episode window
        assert server.push(_valid(server)).status == "applied"
    before, weights = _counters(server), server.flat.weights.clone()
    nan = torch.full((server.num_params,), 0.01)
    nan[3] = float("nan")
    reply = server.push(_valid(server, grads=nan, episode_returns=[1e9], episode_lengths=[1]))
    assert reply.status == "rejected" and not reply.stop
    assert _counters(server) == before and torch.equal(server.flat.weights, weights)
    assert server.rejected == 1 and server.stop_reason is None


BAD_FIELDS = {
    "rank of no worker": {"rank": 7},
    "rank of the server": {"rank": 0},
    "a version never served": {"version": 5},
    "negative env steps": {"env_steps": -1},
    "more env steps than a rollout": {"env_steps": PER_PUSH + 1},
    "more episodes than env steps": {"env_steps": 2, "episode_returns": [1.0] * 3, "episode_lengths": [1] * 3},
    "a non-finite return": {"episode_returns": [float("inf")]},
    "a return that is not a number": {"episode_returns": ["5"]},
    "lengths that do not match": {"episode_returns": [1.0, 2.0], "episode_lengths": [3]},
    "a zero length": {"episode_lengths": [0]},
    "obs stats of the wrong shape": {"obs_stats": RunningMeanStd(np.zeros(3), np.ones(3), 8.0)},
    "non-finite obs stats": {"obs_stats": RunningMeanStd(np.full(4, np.nan), np.ones(4), 8.0)},
    "a negative obs count": {"obs_stats": RunningMeanStd(np.zeros(4), np.ones(4), -1.0)},
}


@pytest.mark.parametrize("changes", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_any_invalid_field_rejects_the_whole_push(changes):
    server = _server()
    server.push(_valid(server))  # master observation statistics exist: their shape is known
    before, weights = _counters(server), server.flat.weights.clone()
    assert server.push(_valid(server, **changes)).status == "rejected"
    assert _counters(server) == before and torch.equal(server.flat.weights, weights)
    assert server.rejected == 1


def test_a_valid_push_counts_everything():
    server = _server()
    reply = server.push(_valid(server))
    assert reply.status == "applied" and server.version == 1
    assert (server.stats.env_steps, server.stats.episodes, list(server.stats.returns)) == (PER_PUSH, 1, [5.0])
    assert server.obs_stats is not None and server.obs_stats.count == 8.0
