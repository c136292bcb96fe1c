"""Why a push cannot be taken: each field checked before any of it counts. Pure functions, one line each."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from distributed_a3c.messages import ExperiencePush, GradientPush
from distributed_a3c.rl.experience import Experience
from distributed_a3c.rl.normalize import RunningMeanStd


@dataclass(frozen=True)
class ExperienceSpec:
    """What every rollout of a job looks like (mode=data, central): shapes and dtypes the envs give."""

    rollout_len: int
    envs: int
    obs_shape: tuple[int, ...]
    obs_dtype: torch.dtype
    action_shape: tuple[int, ...]
    num_actions: int | None
    """Discrete actions: int64 in [0, num_actions); None: continuous float32 actions."""


def push_error(
    req: object,
    version: int,
    numel: int,
    worker_ranks: range | None,
    env_steps_per_push: int | None,
    obs_shape: tuple[int, ...] | None,
    spec: ExperienceSpec | None = None,
) -> str | None:
    """Why `req` cannot be applied by a server at weight `version` holding `numel` parameters, or None.

    With `spec` (mode=data, central) `req` must be an ExperiencePush of that shape, else a GradientPush.
    """
    expected = GradientPush if spec is None else ExperiencePush
    if not isinstance(req, expected):
        return f"a {type(req).__name__}, expected a {expected.__name__}"
    if not isinstance(req.rank, int) or (worker_ranks is not None and req.rank not in worker_ranks):
        return f"rank {req.rank!r} is not a worker of this job"
    if not isinstance(req.version, int) or not 0 <= req.version <= version:
        return f"weight version {req.version!r} was never served (current {version})"
    limit = env_steps_per_push
    if not isinstance(req.env_steps, int) or req.env_steps < 0 or (limit is not None and req.env_steps > limit):
        return f"env_steps={req.env_steps!r} is implausible (0..{limit if limit is not None else 'inf'})"
    error = episodes_error(req.episode_returns, req.episode_lengths, req.env_steps)
    if error is None:
        error = obs_stats_error(req.obs_stats, obs_shape)
    if error is None and not (isinstance(req.stats, dict) and all(isinstance(k, str) for k in req.stats)):
        error = "stats is not a dict of metric names"
    if error is None and spec is not None:
        acted = req.acted_versions
        if acted is not None and not (
            isinstance(acted, list) and len(acted) == spec.rollout_len and all(isinstance(v, int) for v in acted)
        ):
            return f"acted_versions must be a list of {spec.rollout_len} ints"
        if acted is not None and not req.version <= min(acted) <= max(acted) <= version:
            return (
                f"acted_versions {min(acted)}..{max(acted)} were never served or are older than version {req.version}"
            )
        return experience_error(req.experience, spec)
    return error or gradient_error(req.grads, numel)


def episodes_error(returns: object, lengths: object, env_steps: int) -> str | None:
    """Why a push's finished episodes are implausible: each ends on one of its env steps."""
    if not isinstance(returns, list) or not isinstance(lengths, list) or len(lengths) not in (0, len(returns)):
        return "episode_returns must be a list, and episode_lengths an empty list or one of the same length"
    if len(returns) > env_steps:
        return f"{len(returns)} episodes finished in {env_steps} env steps"
    if not all(isinstance(r, int | float) and math.isfinite(r) for r in returns):
        return "an episode return is not a finite number"
    if not all(isinstance(n, int) and n >= 1 for n in lengths):
        return "an episode length is not a positive integer"
    return None


def obs_stats_error(stats: object, shape: tuple[int, ...] | None) -> str | None:
    """Why observation statistics cannot be merged into master ones of `shape` (None: not known yet)."""
    if stats is None:
        return None
    if not isinstance(stats, RunningMeanStd):
        return f"observation statistics are a {type(stats).__name__}"
    shape = stats.mean.shape if shape is None else shape
    if not (stats.mean.shape == shape == stats.var.shape and stats.count >= 0):
        return "observation statistics have the wrong shape or a negative count"
    if not (np.isfinite(stats.mean).all() and np.isfinite(stats.var).all() and math.isfinite(stats.count)):
        return "observation statistics have non-finite values"
    return None


def gradient_error(grads: object, numel: int) -> str | None:
    """Why a pushed gradient cannot be applied to `numel` parameters, or None if it can."""
    if not isinstance(grads, torch.Tensor):
        return f"gradient is a {type(grads).__name__}, expected a torch.Tensor"
    if grads.dim() != 1 or grads.numel() != numel:
        return f"gradient has shape {tuple(grads.shape)}, expected ({numel},)"
    if not grads.is_floating_point():
        return f"gradient dtype is {grads.dtype}, expected a floating-point dtype"
    # Any nan or inf makes the float64 sum non-finite, and finite values cannot overflow it: the same
    # answer as isfinite().all(), 4x (1.7M floats) to 15x (9k floats) faster.
    if not math.isfinite(float(grads.sum(dtype=torch.float64))):
        return "gradient has non-finite values (nan or inf)"
    return None


def experience_error(e: object, spec: ExperienceSpec) -> str | None:
    """Why a rollout's experience does not fit this job (shapes, dtypes, finite values, action range)."""
    if not isinstance(e, Experience):
        return f"experience is a {type(e).__name__}, expected an Experience"
    T, B, obs = spec.rollout_len, spec.envs, spec.obs_shape
    final_index = e.final_index
    k = final_index.shape[0] if isinstance(final_index, torch.Tensor) and final_index.dim() == 2 else -1
    discrete = spec.num_actions is not None
    expected = {
        "obs": ((T, B, *obs), spec.obs_dtype),
        "actions": ((T, B, *spec.action_shape), torch.int64 if discrete else torch.float32),
        "rewards": ((T, B), torch.float32),
        "terminated": ((T, B), torch.bool),
        "truncated": ((T, B), torch.bool),
        "next_obs": ((B, *obs), spec.obs_dtype),
        "final_index": ((max(k, 0), 2), torch.int64),
        "final_obs": ((max(k, 0), *obs), spec.obs_dtype),
        "valid": ((T, B), torch.bool),
        "behaviour_log_probs": ((T, B), torch.float32),
    }
    for name, (shape, dtype) in expected.items():
        t = getattr(e, name)
        if t is None and name in ("valid", "behaviour_log_probs"):
            continue
        if not isinstance(t, torch.Tensor):
            return f"experience.{name} is a {type(t).__name__}, expected a tensor"
        if tuple(t.shape) != shape or t.dtype != dtype:
            return f"experience.{name} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}"
    for name in ("obs", "next_obs", "final_obs", "rewards", "actions", "behaviour_log_probs"):
        t = getattr(e, name)
        if (
            t is not None
            and t.is_floating_point()
            and t.numel()
            and not math.isfinite(float(t.sum(dtype=torch.float64)))
        ):
            return f"experience.{name} has non-finite values (nan or inf)"
    if discrete and e.actions.numel() and not 0 <= int(e.actions.min()) <= int(e.actions.max()) < spec.num_actions:
        return f"experience.actions fall outside [0, {spec.num_actions})"
    if k > 0:
        t, b = final_index.unbind(1)
        if not (0 <= int(t.min()) <= int(t.max()) < T and 0 <= int(b.min()) <= int(b.max()) < B):
            return f"experience.final_index points outside the [{T}, {B}] rollout"
    return None


def observations_error(rank: object, obs: object, spec: ExperienceSpec, worker_ranks: range | None) -> str | None:
    """mode=central: why a worker's request for actions cannot be answered (one step of its envs)."""
    if not isinstance(rank, int) or (worker_ranks is not None and rank not in worker_ranks):
        return f"rank {rank!r} is not a worker of this job"
    shape = (spec.envs, *spec.obs_shape)
    if not isinstance(obs, torch.Tensor):
        return f"observations are a {type(obs).__name__}, expected a tensor"
    if tuple(obs.shape) != shape or obs.dtype != spec.obs_dtype:
        return f"observations are {obs.dtype} {tuple(obs.shape)}, expected {spec.obs_dtype} {shape}"
    if obs.is_floating_point() and not math.isfinite(float(obs.sum(dtype=torch.float64))):
        return "observations have non-finite values (nan or inf)"
    return None
