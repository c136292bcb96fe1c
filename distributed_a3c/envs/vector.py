"""Gymnasium environment factory: a batch of envs per worker, with episode statistics.

Sync/async vector envs run with SAME_STEP autoreset: a step that ends an episode returns the first
observation of the next one and puts the real final observation in `info["final_obs"]`, which the worker
needs to bootstrap truncated episodes. `env.vectorization=vector` uses the env's own batched
implementation instead (NEXT_STEP autoreset, see `_make_native_gym_vector_env`). Each env records its own
episode return/length before any reward-shaping wrapper, so metrics always show the raw game score.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from distributed_a3c.config import EnvConfig
from distributed_a3c.envs.atari import is_atari, make_atari_env
from distributed_a3c.envs.native import make_native_vector_env

log = logging.getLogger(__name__)


def make_env_fn(cfg: EnvConfig) -> Callable[[], gym.Env]:
    if is_atari(cfg.id):  # DeepMind preprocessing, see atari.py
        return functools.partial(make_atari_env, cfg)

    def thunk() -> gym.Env:
        kwargs = dict(cfg.kwargs)
        if cfg.max_episode_steps is not None:
            kwargs["max_episode_steps"] = cfg.max_episode_steps
        if _is_mujoco(cfg.id):
            _route_mujoco_warnings()
        env = gym.make(cfg.id, **kwargs)
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


def _is_mujoco(env_id: str) -> bool:
    spec = gym.registry.get(env_id)
    entry = spec.entry_point if spec is not None else None
    return isinstance(entry, str) and entry.startswith("gymnasium.envs.mujoco")


@functools.cache
def _route_mujoco_warnings() -> None:
    """MuJoCo prints its warnings (e.g. HalfCheetah's deprecated `settotalmass` with mujoco 4) to stderr and
    appends them to MUJOCO_LOG.TXT in the working directory, once per env; send them to logging instead."""
    import mujoco

    mujoco.set_mju_user_warning(lambda message: log.debug("mujoco: %s", message))


def make_vector_env(cfg: EnvConfig, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    """`num_envs` copies of `cfg.id`, reset with seeds seed, seed+1, ..."""
    if cfg.backend != "gymnasium":  # ale_vector / envpool: C++ vector envs for Atari
        return make_native_vector_env(cfg, num_envs, seed)
    if vectorization_mode(cfg) == "vector":
        return _make_native_gym_vector_env(cfg, num_envs, seed)
    fns = [make_env_fn(cfg) for _ in range(num_envs)]
    if vectorization_mode(cfg) == "async":
        envs = gym.vector.AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    else:
        envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=[seed + i for i in range(num_envs)])
    envs.action_space.seed(seed)
    return envs


def _make_native_gym_vector_env(cfg: EnvConfig, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    """The env's own batched implementation (e.g. CartPole's numpy one): NEXT_STEP autoreset.

    An episode's last step returns its real final observation; the env's next step resets it, ignoring
    the action (the worker masks that step out of the loss).
    """
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    envs = gym.make_vec(cfg.id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    return envs


def vectorization_mode(cfg: EnvConfig) -> str:
    """`env.vectorization` with `auto` resolved: the env's own batched implementation if it has one (not
    for ALE ids: their batched env is `env.backend=ale_vector`, with the Atari preprocessing applied)."""
    if cfg.vectorization == "auto":
        return "vector" if has_native_vector_env(cfg.id) and not is_atari(cfg.id) else "sync"
    return cfg.vectorization


def has_native_vector_env(env_id: str) -> bool:
    spec = gym.registry.get(env_id)
    return spec is not None and spec.vector_entry_point is not None


def is_next_step_autoreset(envs: gym.vector.VectorEnv) -> bool:
    return envs.metadata.get("autoreset_mode") == AutoresetMode.NEXT_STEP


def episode_ends(info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The episodes that ended in this vector step, per env (either autoreset mode): (ended [N] bool,
    returns [N], lengths [N]; only the entries where `ended` holds mean anything), or None if none ended."""
    stats = info.get("final_info") or info  # SAME_STEP: under final_info; NEXT_STEP: at the top level
    if "episode" not in stats:
        return None
    return (
        np.asarray(stats["_episode"], dtype=bool),
        np.asarray(stats["episode"]["r"]),
        np.asarray(stats["episode"]["l"]),
    )


def finished_episodes(info: dict[str, Any]) -> tuple[list[float], list[int]]:
    """Returns and lengths of the episodes that ended in this vector step (either autoreset mode)."""
    ends = episode_ends(info)
    if ends is None:
        return [], []
    mask, returns, lengths = ends
    return [float(r) for r in returns[mask]], [int(n) for n in lengths[mask]]


def final_observations(info: dict[str, Any], env_indices: np.ndarray) -> np.ndarray:
    """The real last observations of the envs in `env_indices`, stacked."""
    return np.stack([info["final_obs"][i] for i in env_indices])
