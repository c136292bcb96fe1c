"""A Worker against the in-process ParameterServer (no RPC): it learns CartPole, and bootstraps truncations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import distributed_a3c.train as train  # registers `config_schema` in Hydra's ConfigStore
from distributed_a3c.config import Config
from distributed_a3c.envs import make_vector_env
from distributed_a3c.models import build_model
from distributed_a3c.server import ParameterServer
from distributed_a3c.worker import Worker

# Measured on this code: with the cartpole preset and a single in-process worker, the mean return of the
# last 100 episodes passed 195 after 30k-40k env steps for every seed tried (1-10). The budget gives ~2x margin.
TARGET_RETURN = 195.0
STEP_BUDGET = 80_000


def _config(overrides: list[str]) -> Config:
    with initialize_config_dir(config_dir=train.CONF_DIR, version_base=None):
        return train.to_config(compose("config", overrides=overrides))


def _in_process(cfg: Config) -> tuple[ParameterServer, Worker]:
    torch.manual_seed(cfg.seed)
    env = make_vector_env(cfg.env, 1, 0)
    model = build_model(cfg, env.single_observation_space, env.single_action_space)
    env.close()
    server = ParameterServer(model, cfg.optim, cfg.server, cfg.train)
    worker = Worker(cfg, 1, server)
    worker._apply(server.pull())
    return server, worker


def test_worker_learns_cartpole_against_in_process_server():
    cfg = _config(
        [
            "env=cartpole",
            "seed=1",
            f"train.target_return={TARGET_RETURN}",
            f"train.total_env_steps={STEP_BUDGET}",
            "train.max_minutes=null",
        ]
    )
    server, worker = _in_process(cfg)
    try:
        assert torch.equal(worker.flat.weights, server.flat.weights)
        statuses = set()
        while server.stop_reason is None:
            reply = worker.step()
            statuses.add(reply.status)
            assert worker.version == server.version  # one worker, synchronous pushes: never stale
    finally:
        worker.envs.close()
    assert server.stop_reason == "target_return", (server.stats.env_steps, server.stats.mean_return())
    assert server.stats.mean_return() >= TARGET_RETURN
    assert server.stats.env_steps <= STEP_BUDGET
    assert server.stats.episodes >= 100
    assert statuses == {"applied"}
    assert server.dropped == server.rejected == 0
    assert torch.equal(worker.flat.weights, server.flat.weights)


def test_truncated_steps_bootstrap_from_the_final_observation():
    # SAME_STEP autoreset (sync): the final observation comes in info; test_next_step_autoreset.py covers vector.
    cfg = _config(
        [
            "env=cartpole",
            "env.vectorization=sync",
            "env.max_episode_steps=10",
            "worker.envs_per_worker=4",
            "worker.rollout_len=5",
        ]
    )
    server, worker = _in_process(cfg)
    infos: list[dict] = []
    step = worker.envs.step

    def recording_step(actions):
        out = step(actions)
        infos.append(out[-1])
        return out

    worker.envs.step = recording_step
    truncations = 0
    try:
        for _ in range(8):  # 40 steps per env: several 10-step time limits
            infos.clear()
            rollout = worker.collect()
            final_values = rollout.final_values.clone()
            terminated, truncated = rollout.terminated.bool(), rollout.truncated.bool()
            cut = truncated & ~terminated
            truncations += int(cut.sum())
            assert bool((final_values[cut] != 0).all())
            assert bool((final_values[~cut] == 0).all())
            # ... and it is V(real final observation), not V(first observation of the next episode).
            for t, b in cut.nonzero().tolist():
                final_obs = torch.as_tensor(np.asarray(infos[t]["final_obs"][b]), dtype=torch.float32)
                with torch.no_grad():
                    expected = worker.model.value(final_obs.unsqueeze(0))[0]
                assert float(final_values[t, b]) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
            worker.compute_gradients(rollout)
    finally:
        worker.envs.close()
    assert truncations >= 8


@pytest.mark.parametrize("vectorization", ["vector", "sync"])
def test_worker_envs_are_seeded_as_docs_config_says(vectorization: str) -> None:
    """docs/CONFIG.md#seeds: rank r's env i starts from seed + 1000 r + i in gymnasium's vector envs; an
    env's own batched implementation is one environment, reset once with seed + 1000 r."""
    import gymnasium as gym

    cfg = _config([f"env.vectorization={vectorization}", "worker.envs_per_worker=4", "seed=7"])
    _, worker = _in_process(cfg)
    first_obs = worker._raw_obs
    base = 7 + 1000 * 1
    if vectorization == "sync":
        expected = np.stack([gym.make("CartPole-v1").reset(seed=base + i)[0] for i in range(4)])
    else:
        batch = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")
        expected = batch.reset(seed=base)[0]
    np.testing.assert_array_equal(first_obs, expected)
    other = Worker(cfg, 2, worker.store)  # another rank starts elsewhere
    assert not np.array_equal(other._raw_obs, first_obs)
