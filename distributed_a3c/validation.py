"""Why a push cannot be taken: each field checked before any of it counts. Pure functions, one line each."""

from __future__ import annotations

import math

import numpy as np
import torch

from distributed_a3c.messages import GradientPush
from distributed_a3c.rl.normalize import RunningMeanStd


def push_error(
    req: object,
    version: int,
    numel: int,
    worker_ranks: range | None,
    env_steps_per_push: int | None,
    obs_shape: tuple[int, ...] | None,
) -> str | None:
    """Why `req` cannot be applied by a server at weight `version` holding `numel` parameters, or None."""
    if not isinstance(req, GradientPush):
        return f"a {type(req).__name__}, expected a GradientPush"
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
