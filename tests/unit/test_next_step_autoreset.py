"""env.vectorization=vector: NEXT_STEP autoreset handled by masking, bootstrapping from the next row."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from distributed_a3c.config import Config, validate
from distributed_a3c.envs import make_vector_env
from distributed_a3c.models import build_model
from distributed_a3c.server import ParameterServer
from distributed_a3c.worker import Worker


def _worker(max_steps: int, envs: int = 4, rollout: int = 25) -> tuple[Worker, ParameterServer]:
    cfg = Config()
    cfg.env.vectorization = "vector"
    cfg.env.max_episode_steps = max_steps
    cfg.worker.envs_per_worker = envs
    cfg.worker.rollout_len = rollout
    validate(cfg)
    probe = make_vector_env(cfg.env, 1, 0)
    server = ParameterServer(
        build_model(cfg, probe.single_observation_space, probe.single_action_space), cfg.optim, cfg.server, cfg.train
    )
    worker = Worker(cfg, 1, server)
    worker._apply(server.pull())
    return worker, server


def test_reset_step_is_masked_and_truncation_bootstraps_from_the_final_observation() -> None:
    worker, _ = _worker(max_steps=10)
    r = worker.collect()
    valid = r.valid.numpy()
    done = (r.terminated | r.truncated).numpy()
    # The row after every episode end only resets the env: masked; every other row is a real transition.
    expected = np.ones_like(valid)
    expected[1:] = ~done[:-1]
    assert worker.next_step_autoreset
    assert (valid == expected).all()
    assert (~valid).any(), "a 10-step time limit must end episodes inside a 25-step rollout"
    # V(final obs) of a truncated episode is the value of the next row, computed on the real final obs.
    t, b = np.nonzero(r.truncated.numpy()[:-1])
    assert len(t) > 0
    with torch.no_grad():
        expected_values = worker.model.value(r.obs[t + 1, b])
    torch.testing.assert_close(r.final_values[t, b], expected_values)
    # The reset row's reward is the env's dummy 0, and it is the row that gets masked.
    assert (r.rewards[t + 1, b] == 0).all()


def test_masked_rows_do_not_change_the_gradient() -> None:
    worker, _ = _worker(max_steps=10)
    r = worker.collect()
    worker.compute_gradients(r)
    grads = worker.flat.grads.clone()
    # Scramble what the masked rows hold: the gradient must not move.
    invalid = ~r.valid
    actions, rewards = r.actions.clone(), r.rewards.clone()
    actions[invalid] = 1 - actions[invalid]
    rewards[invalid] = 123.0
    worker.compute_gradients(dataclasses.replace(r, actions=actions, rewards=rewards))
    torch.testing.assert_close(worker.flat.grads, grads)


def test_vector_mode_learns_cartpole_in_process() -> None:
    # Measured (seeds 1, 2; sync mode alike): mean return of the episodes so far passes 200 by 40k steps
    # from ~22 for a random policy; the best of these checkpoints must pass 150 within 80k steps.
    worker, server = _worker(max_steps=500, envs=16, rollout=5)
    best, next_check = float("-inf"), 10_000
    while server.stats.env_steps < 80_000 and best < 150:
        worker.step()
        if server.stats.env_steps >= next_check:
            best = max(best, sum(server.stats.returns) / len(server.stats.returns))
            next_check += 10_000
    assert best >= 150, best
