"""Gymnasium environment factory: a batch of envs per worker, with episode statistics.

Vector envs run with SAME_STEP autoreset: a step that ends an episode returns the first observation
of the next one and puts the real final observation in `info["final_obs"]`, which the worker needs to
bootstrap truncated episodes. Each env records its own episode return/length before any
reward-shaping wrapper, so metrics always show the raw game score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from distributed_a3c.config import EnvConfig


def make_env_fn(cfg: EnvConfig) -> Callable[[], gym.Env]:
    def thunk() -> gym.Env:
        kwargs = dict(cfg.kwargs)
        if cfg.max_episode_steps is not None:
            kwargs["max_episode_steps"] = cfg.max_episode_steps
        env = gym.make(cfg.id, **kwargs)
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


def make_vector_env(cfg: EnvConfig, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    """`num_envs` copies of `cfg.id`, reset with seeds seed, seed+1, ..."""
    fns = [make_env_fn(cfg) for _ in range(num_envs)]
    if cfg.vectorization == "async":
        envs = gym.vector.AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    else:
        envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=[seed + i for i in range(num_envs)])
    envs.action_space.seed(seed)
    return envs


def finished_episodes(info: dict[str, Any]) -> tuple[list[float], list[int]]:
    """Returns and lengths of the episodes that ended in this vector step."""
    final = info.get("final_info")
    if not final or "episode" not in final:
        return [], []
    mask = final["_episode"]
    ep = final["episode"]
    return [float(r) for r in ep["r"][mask]], [int(n) for n in ep["l"][mask]]


def final_observations(info: dict[str, Any], env_indices: np.ndarray) -> np.ndarray:
    """The real last observations of the envs in `env_indices`, stacked."""
    return np.stack([info["final_obs"][i] for i in env_indices])
