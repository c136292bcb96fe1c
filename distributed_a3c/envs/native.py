"""The native Atari backends (`env.backend=ale_vector`, `envpool`): C++ vector envs adapted to the contract
of atari.py (uint8 stacked frames, SAME_STEP autoreset with `final_obs`, raw game scores in
`final_info`), with the per-env episode bookkeeping the gymnasium backend gets from its wrappers."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from distributed_a3c.config import EnvConfig
from distributed_a3c.envs.atari import AtariDependencyError, is_atari, max_frames, spec_kwargs


# ----- native backends: the same contract on top of a C++ vector env ------------------------------------
class _EpisodeBook:
    """Per-env raw returns, lengths and lives of a native vector env: what RecordEpisodeStatistics,
    EpisodicLife and TransformReward do for the gymnasium backend, done on the batch."""

    def __init__(self, num_envs: int, clip_rewards: bool, terminal_on_life_loss: bool) -> None:
        self.clip_rewards = clip_rewards
        self.terminal_on_life_loss = terminal_on_life_loss
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.starts = np.full(num_envs, time.perf_counter())
        self.lives = np.zeros(num_envs, dtype=np.int64)

    def reset(self, lives: np.ndarray) -> None:
        self.returns[:] = 0
        self.lengths[:] = 0
        self.starts[:] = time.perf_counter()
        self.lives[:] = lives

    def step(
        self,
        obs: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        info: dict[str, Any],
        final_obs: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(training rewards, training terminals, SAME_STEP info) of one step whose raw rewards are `rewards`,
        `final_obs` the real last obs of the envs that ended a game (None when none did)."""
        raw = rewards.astype(np.float64, copy=False)
        self.returns += raw
        self.lengths += 1
        done = terminated | truncated
        lives = info["lives"]
        lost = (lives < self.lives) & ~done if self.terminal_on_life_loss else np.zeros_like(done)
        self.lives[:] = lives  # after a game ends, already the next game's lives (SAME_STEP)
        out = {k: v for k, v in info.items() if k != "final_obs"}
        ended = done | lost
        if ended.any():
            if final_obs is None or lost.any():
                final_obs = np.array(obs if final_obs is None else final_obs)
                final_obs[lost] = obs[lost]  # the game goes on: its last obs is also the next first one
            now = time.perf_counter()
            episode = {"r": self.returns.copy(), "l": self.lengths.copy(), "t": np.round(now - self.starts, 6)}
            out["final_obs"] = final_obs
            out["_final_obs"] = ended
            out["final_info"] = {"episode": episode, "_episode": done.copy()}
            out["_final_info"] = ended
            self.returns[done] = 0
            self.lengths[done] = 0
            self.starts[done] = now
        train_rewards = np.sign(raw) if self.clip_rewards else raw
        return train_rewards.astype(np.float32), terminated | lost, out


class AleVectorAdapter(gym.vector.VectorWrapper):
    """ale_py's AtariVectorEnv (run with SAME_STEP autoreset, raw rewards, no life terminals) with the
    episode statistics, reward clipping and life-loss terminals of the gymnasium backend."""

    def __init__(self, env: gym.vector.VectorEnv, clip_rewards: bool, terminal_on_life_loss: bool) -> None:
        super().__init__(env)
        self._book = _EpisodeBook(env.num_envs, clip_rewards, terminal_on_life_loss)

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, list | tuple):
            seed = np.asarray(seed, dtype=np.int64)
        if options and "reset_mask" in options:
            raise NotImplementedError("partial resets are not supported by the ale_vector adapter")
        obs, info = self.env.reset(seed=seed, options=options)
        self._book.reset(info["lives"])
        return obs, info

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(np.asarray(actions))
        rewards, terminated, info = self._book.step(obs, rewards, terminated, truncated, info, info.get("final_obs"))
        return obs, rewards, terminated, truncated, info


def make_ale_vector_env(cfg: EnvConfig, num_envs: int) -> gym.vector.VectorEnv:
    from ale_py.vector_env import AtariVectorEnv

    kwargs = spec_kwargs(cfg.id)
    a = cfg.atari
    unknown = set(cfg.kwargs) - {"full_action_space"}
    if unknown:
        raise ValueError(
            f"env.kwargs={dict(cfg.kwargs)!r} is invalid: must hold only full_action_space for env.backend=ale_vector"
        )
    env = AtariVectorEnv(
        kwargs["game"],
        num_envs,
        num_threads=a.num_threads,
        max_num_frames_per_episode=max_frames(cfg),
        repeat_action_probability=a.repeat_action_probability,
        full_action_space=bool(cfg.kwargs.get("full_action_space", False)),
        autoreset_mode=AutoresetMode.SAME_STEP,
        img_height=a.screen_size,
        img_width=a.screen_size,
        grayscale=True,
        stack_num=a.frame_stack,
        frameskip=a.frame_skip,
        maxpool=True,
        noop_max=a.noop_max,
        episodic_life=False,  # it would reset the whole game at each lost life
        life_loss_info=False,
        reward_clipping=False,  # clipped by the adapter, after the raw score is counted
        use_fire_reset=a.fire_reset,
    )
    return AleVectorAdapter(env, a.clip_rewards, a.terminal_on_life_loss)


class EnvpoolAdapter(gym.vector.VectorEnv):
    """An envpool Atari pool (NEXT_STEP autoreset, reset frame repeated in the stack) as a SAME_STEP
    vector env with zero stack padding and the episode contract of the other backends."""

    def __init__(self, pool: Any, num_envs: int, cfg: EnvConfig) -> None:
        self.pool = pool
        self.num_envs = num_envs
        self.single_observation_space = pool.observation_space
        self.single_action_space = pool.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self._stack = cfg.atari.frame_stack
        self._since_reset = np.zeros(num_envs, dtype=np.int64)
        self._book = _EpisodeBook(num_envs, cfg.atari.clip_rewards, cfg.atari.terminal_on_life_loss)

    def _pad_with_zeros(self, obs: np.ndarray) -> np.ndarray:
        # envpool fills the stack with copies of the first frame; frame j is such a copy while
        # fewer than stack-1-j steps have passed since the reset.
        for j in range(self._stack - 1):
            young = self._since_reset < self._stack - 1 - j
            if young.any():
                obs[young, j] = 0
        return obs

    def reset(self, *, seed=None, options=None):
        obs, info = self.pool.reset()  # envpool seeds are fixed at creation
        self._since_reset[:] = 0
        self._book.reset(info["lives"])
        return self._pad_with_zeros(obs), {"lives": info["lives"]}

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.pool.step(np.asarray(actions))
        self._since_reset += 1
        done = terminated | truncated
        final_obs = None
        lives = np.array(info["lives"])
        if done.any():
            ids = np.flatnonzero(done)
            final_obs = self._pad_with_zeros(obs.copy())
            new_obs, new_info = self.pool.reset(ids)  # SAME_STEP: start the next episode now
            obs[ids] = new_obs
            lives[ids] = new_info["lives"]
            self._since_reset[ids] = 0
        obs = self._pad_with_zeros(obs)
        rewards, terminated, out = self._book.step(obs, rewards, terminated, truncated, {"lives": lives}, final_obs)
        return obs, rewards, terminated, truncated, out

    def close_extras(self, **kwargs) -> None:
        self.pool.close()


def make_envpool_env(cfg: EnvConfig, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    try:
        import envpool
    except ImportError as e:
        raise AtariDependencyError("env.backend=envpool needs envpool: pip install envpool") from e
    if cfg.kwargs:
        raise ValueError(f"env.kwargs={dict(cfg.kwargs)!r} is invalid: must be {{}} for env.backend=envpool")
    a = cfg.atari
    pool = envpool.make(
        cfg.id.removeprefix("ALE/"),
        env_type="gymnasium",
        num_envs=num_envs,
        seed=seed,
        num_threads=a.num_threads,
        max_episode_steps=max_frames(cfg) // a.frame_skip,
        img_height=a.screen_size,
        img_width=a.screen_size,
        stack_num=a.frame_stack,
        frame_skip=a.frame_skip,
        noop_max=max(a.noop_max, 1),  # draws 0..noop_max-1 no-ops; envpool 1.2 crashes on 0
        episodic_life=False,
        reward_clip=False,
        use_fire_reset=a.fire_reset,
        repeat_action_probability=a.repeat_action_probability,
        gray_scale=True,
    )
    return EnvpoolAdapter(pool, num_envs, cfg)


def make_native_vector_env(cfg: EnvConfig, num_envs: int, seed: int) -> gym.vector.VectorEnv:
    """The `ale_vector` or `envpool` backend, reset with seeds seed, seed+1, ..."""
    if not is_atari(cfg.id):
        raise ValueError(f"env.backend={cfg.backend!r} is invalid: must be gymnasium for env.id={cfg.id!r}")
    if cfg.backend == "ale_vector":
        envs = make_ale_vector_env(cfg, num_envs)
    elif cfg.backend == "envpool":
        envs = make_envpool_env(cfg, num_envs, seed)
    else:
        raise ValueError(f"env.backend={cfg.backend!r} is invalid: must be one of gymnasium, ale_vector, envpool")
    envs.reset(seed=[seed + i for i in range(num_envs)])
    envs.action_space.seed(seed)
    return envs
