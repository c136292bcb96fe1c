"""After the stop, the server's weights and counters are final: what the checkpoint and summary record."""

from __future__ import annotations

import pytest
import torch

from distributed_a3c.config import Config, validate
from distributed_a3c.envs import make_vector_env
from distributed_a3c.messages import GradientPush
from distributed_a3c.models import build_model
from distributed_a3c.server import ParameterServer


@pytest.mark.parametrize("fold", [False, True])
def test_pushes_after_the_stop_change_nothing_and_are_told_to_stop(fold: bool) -> None:
    cfg = Config()
    cfg.server.fold = fold
    validate(cfg)
    probe = make_vector_env(cfg.env, 1, 0)
    server = ParameterServer(
        build_model(cfg, probe.single_observation_space, probe.single_action_space), cfg.optim, cfg.server, cfg.train
    )
    g = torch.ones(server.num_params)
    assert (
        server.push(GradientPush(rank=1, version=0, grads=g, env_steps=10, episode_returns=[5.0])).status == "applied"
    )
    server.request_stop("interrupted")
    before = (server.flat.weights.clone(), server.version, server.stats.env_steps, server.stats.episodes)
    reply = server.push(GradientPush(rank=2, version=server.version, grads=g, env_steps=10, episode_returns=[7.0]))
    assert reply.stop and reply.status == "stopped"
    after = (server.flat.weights, server.version, server.stats.env_steps, server.stats.episodes)
    assert torch.equal(before[0], after[0]) and before[1:] == after[1:]
