"""Atari (`ALE/...` ids) with the DeepMind preprocessing, from three backends behind one contract.

Preprocessing (Mnih et al. 2015, "Human-level control through deep RL", Methods): up to `noop_max`
no-ops on reset, each action repeated `frame_skip` frames with the max over the last two, 84x84
grayscale, `frame_stack` frames stacked oldest first (zeros before an episode's first frame), rewards
clipped to their sign for the loss, optionally a lost life as a terminal for the loss.

Backends (`env.backend`):
  gymnasium   gymnasium's own wrappers (AtariPreprocessing, FrameStackObservation, RecordEpisodeStatistics,
              TransformReward) around `ALE/<Game>-v5` with frameskip=1, in a Sync/Async vector env.
  ale_vector  ale_py's threaded C++ AtariVectorEnv (same preprocessing in C++), adapted in native.py.
  envpool     envpool's C++ pool, adapted in native.py (optional: `pip install envpool`).

Every backend gives what the worker relies on: uint8 observations [N, stack, size, size]; SAME_STEP
autoreset (the obs after an episode end is the next episode's first one, the real last one is in
`info["final_obs"]`); and the RAW game score of each finished game in `info["final_info"]["episode"]`
with mask `info["final_info"]["_episode"]`, counted below reward clipping and life-loss terminals, so
metrics report full-game scores while the loss sees clipped rewards and per-life episodes.

FIRE is pressed on real resets only (as ale_py's vector env does); after a lost life the agent fires.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np

from distributed_a3c.config import EnvConfig

EXTRA_HINT = "pip install 'distributed_a3c[atari]'"


class AtariDependencyError(ImportError):
    """A package an Atari env needs is not installed; the message names the pip command."""


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def require_ale(env_id: str) -> None:
    """Import ale_py (which registers the `ALE/` ids) or raise naming the pip extra."""
    try:
        import ale_py  # noqa: F401
    except ImportError as e:
        raise AtariDependencyError(f"env.id={env_id!r} needs ale-py (the Atari emulator and ROMs): {EXTRA_HINT}") from e


def _require_cv2() -> None:
    if importlib.util.find_spec("cv2") is None:
        raise AtariDependencyError(f"env.backend=gymnasium for Atari needs OpenCV to resize frames: {EXTRA_HINT}")


def spec_kwargs(env_id: str) -> dict[str, Any]:
    require_ale(env_id)
    return gym.spec(env_id).kwargs


def max_frames(cfg: EnvConfig) -> int:
    """Emulator frames a native backend plays per episode: env.max_episode_steps agent steps, else the id's
    own limit (108k frames for v5, which counts the reset no-ops in the gymnasium backend)."""
    if cfg.max_episode_steps is not None:
        return cfg.max_episode_steps * cfg.atari.frame_skip
    return int(spec_kwargs(cfg.id).get("max_num_frames_per_episode", 108_000))


# ----- gymnasium backend: one env per copy, gymnasium's wrappers ----------------------------------------
class FireOnReset(gym.Wrapper):
    """Press FIRE for one frame after each reset (Breakout needs it to start), as ale_py's vector env does.

    Wrap the frameskip=1 env, below AtariPreprocessing: its no-ops follow the FIRE frame.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._fire = env.unwrapped.get_action_meanings().index("FIRE")

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(self._fire)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class EpisodicLife(gym.Wrapper):
    """A lost life is a terminal for the loss, but the game goes on: reset() after a lost life only
    returns the last observation; the emulator resets when the game is really over.

    Wrap it ABOVE RecordEpisodeStatistics so recorded episodes are whole games.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._game_over = True
        self._last: tuple[Any, dict[str, Any]] | None = None

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = int(info["lives"])
        if not self._game_over and lives < self._lives:
            terminated = True
        self._lives = lives
        self._last = (obs, info)
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        explicit = kwargs.get("seed") is not None or kwargs.get("options") is not None  # a caller's own reset
        if self._game_over or self._last is None or explicit:
            obs, info = self.env.reset(**kwargs)
            self._lives = int(info["lives"])
            self._game_over = False
            return obs, info
        obs, info = self._last
        return obs, {"lives": info["lives"]}


def _sign(reward: float) -> float:
    return float(np.sign(reward))


def make_atari_env(cfg: EnvConfig) -> gym.Env:
    """One preprocessed Atari env built from gymnasium's wrappers (the `gymnasium` backend, and evaluation)."""
    require_ale(cfg.id)
    _require_cv2()
    a = cfg.atari
    kwargs = {
        "repeat_action_probability": a.repeat_action_probability,
        "obs_type": "grayscale",  # AtariPreprocessing reads the screen itself; skip the RGB copy per frame
        **cfg.kwargs,
        "frameskip": 1,  # AtariPreprocessing skips frames (and max-pools the last two)
    }
    env = gym.make(cfg.id, **kwargs)
    if a.fire_reset and "FIRE" in env.unwrapped.get_action_meanings():
        env = FireOnReset(env)
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=a.noop_max, frame_skip=a.frame_skip, screen_size=a.screen_size, grayscale_obs=True
    )
    env = gym.wrappers.FrameStackObservation(env, a.frame_stack, padding_type="zero")
    if cfg.max_episode_steps is not None:  # agent steps, as in the native backends
        env = gym.wrappers.TimeLimit(env, cfg.max_episode_steps)
    env = gym.wrappers.RecordEpisodeStatistics(env)  # below life loss and clipping: raw full-game scores
    if a.terminal_on_life_loss:
        env = EpisodicLife(env)
    if a.clip_rewards:
        env = gym.wrappers.TransformReward(env, _sign)
    return env
