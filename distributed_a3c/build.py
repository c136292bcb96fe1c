"""What a job's config builds on the lead: the parameter server of its mode and shard, and the optimizer
step it takes for the job's size (rl/scaling.py), said once at start. The trainer, the serial runner and
the RPC roles all build the server here, so the three cannot disagree on it.
"""

from __future__ import annotations

import dataclasses
import os

import gymnasium as gym
import numpy as np
import torch

from distributed_a3c.config import EXPERIENCE_MODES, Config
from distributed_a3c.config.choices import STEP_BOUND_KEYS
from distributed_a3c.models import build_model, env_spaces
from distributed_a3c.rl.scaling import (
    auto_accumulate,
    fitted_push_shape,
    pushes_to_reach,
    resolve_rule,
    staleness_factor,
)
from distributed_a3c.server import ExperienceServer, ExperienceSpec, ParameterServer, SynchronousServer
from distributed_a3c.server.placement import Layout, plan


def fit_to_workers(cfg: Config, workers: int) -> Config:
    """The config every rank of a job of `workers` workers runs: in mode=sync and mode=data, each worker's
    push made smaller so that a step holding every worker's push learns from about `scale.sync_env_steps`
    (`scale.data_env_steps`) env steps (rl/scaling.py), with optim.lr still meant for the configured push;
    in the other modes, `cfg` itself."""
    if cfg.mode not in STEP_BOUND_KEYS:
        return cfg
    w = cfg.worker
    step_env_steps = getattr(cfg.scale, STEP_BOUND_KEYS[cfg.mode])
    rollout_len, envs = fitted_push_shape(w.rollout_len, w.envs_per_worker, workers, step_env_steps)
    if (rollout_len, envs) == (w.rollout_len, w.envs_per_worker):
        return cfg
    return dataclasses.replace(
        cfg,
        worker=dataclasses.replace(w, rollout_len=rollout_len, envs_per_worker=envs),
        scale=dataclasses.replace(cfg.scale, reference_batch=reference_env_steps(cfg)),
    )


def reference_env_steps(cfg: Config) -> int:
    """Env steps that `optim.lr` is meant for: `scale.reference_batch`, or one worker's push when it is null."""
    return cfg.scale.reference_batch or cfg.worker.push_env_steps


def server_device(cfg: Config) -> torch.device:
    if cfg.server.device == "cuda" or (cfg.server.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def build_server(
    cfg: Config, shard: int, world_size: int, state: dict | None, layout: Layout | None = None
) -> ParameterServer:
    """Parameter-server shard `shard` of a job of `world_size` ranks (laid out as `layout`: ranks 0..S-1
    serve, the others push, when not given), continued from `state` if given."""
    torch.set_num_threads(1)
    obs_space, action_space = env_spaces(cfg)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone: every shard starts alike
    model = build_model(cfg, obs_space, action_space)
    layout = layout or plan(world_size, cfg.server.shards)
    workers = layout.pushers
    device = server_device(cfg)
    server_cfg = dataclasses.replace(cfg.server, accumulate=pushes_per_step(cfg, len(workers)))
    rule = resolve_rule(cfg.scale.rule, cfg.mode, cfg.server.node_aggregate)
    if cfg.mode in EXPERIENCE_MODES:
        spec = experience_spec(cfg, obs_space, action_space)
        central = cfg.mode == "central"
        server = ExperienceServer(
            model,
            cfg.optim,
            server_cfg,
            cfg.train,
            cfg.algo,
            spec,
            device,
            workers,
            central,
            dataclasses.replace(cfg.scale, rule=rule),
        )
    else:
        per_push = cfg.worker.push_env_steps * layout.pushes_per_forward()  # a node aggregator's push sums its workers'
        # optim.lr is meant for one worker's push: an aggregated push of W learns at sqrt(W)x with scale.rule=sqrt.
        scale = dataclasses.replace(cfg.scale, rule=rule, reference_batch=reference_env_steps(cfg))
        kind = SynchronousServer if cfg.mode == "sync" else ParameterServer
        server = kind(model, cfg.optim, server_cfg, cfg.train, device, shard, workers, per_push, scale)
    if state is not None:
        server.load_state_dict(state)
    return server


def pushes_per_step(cfg: Config, workers: int) -> int:
    """`server.accumulate` resolved for a job of `workers` workers: auto (0), in mode=grad without
    server.fold, sums enough pushes to reach `scale.reference_batch` env steps when one is set, else the
    pushes of every `scale.workers_per_step` workers; otherwise each push is its own step."""
    if cfg.server.accumulate > 0:
        return cfg.server.accumulate
    if cfg.mode != "grad" or cfg.server.fold:
        return 1
    if cfg.scale.reference_batch is not None:
        return pushes_to_reach(cfg.scale.reference_batch, cfg.worker.push_env_steps)
    return auto_accumulate(workers, cfg.scale.workers_per_step)


def scaling_line(cfg: Config, server: ParameterServer, workers: int) -> str:
    """What the optimizer's step is for this job's size, said once at start (rl/scaling.py)."""
    if cfg.mode == "sync":
        pushes, how = workers, f"every worker's push ({_push_said(cfg)}), averaged"
    elif cfg.mode == "data":
        pushes, how = 1, f"the rollouts queued ({_push_said(cfg, ' each')}; varies, shown for one)"
    elif cfg.mode in EXPERIENCE_MODES:
        pushes, how = 1, "the rollouts queued (varies; shown for one)"
    elif cfg.server.fold:
        pushes, how = 1, "the pushes that queued (server.fold; varies; shown for one)"
    else:
        auto = " (server.accumulate=auto)" if cfg.server.accumulate == 0 else ""
        pushes, how = server.accumulate, f"{server.accumulate} push{'es' if server.accumulate > 1 else ''}{auto}"
    return (
        f"optimizer steps: {workers} worker{'s' if workers != 1 else ''}; each step learns from {how}: "
        f"{pushes * server.push_env_steps} env steps, lr {server.base_lr:g} -> {server.step_lr(pushes):.4g} "
        f"(scale.rule={_rule_said(cfg.scale.rule, server.scale.rule)}, "
        f"optim.lr is for {server.reference_env_steps} env steps)" + _staleness_clause(cfg, workers, server.accumulate)
    )


def _push_said(cfg: Config, each: str = "") -> str:
    """A worker's push as fitted to the job, and the option that bounds it (sync, data)."""
    w, key = cfg.worker, STEP_BOUND_KEYS[cfg.mode]
    return f"{w.envs_per_worker} envs x {w.rollout_len} steps{each}; scale.{key}={getattr(cfg.scale, key)}"


def _rule_said(asked: str, used: str) -> str:
    return f"auto: {used}" if asked == "auto" else used


def _staleness_clause(cfg: Config, workers: int, accumulate: int) -> str:
    """The staleness rule, with the factor a push gets at the job's typical staleness (the optimizer steps
    the other workers take while one collects)."""
    rule, ref = cfg.scale.staleness, cfg.scale.staleness_reference
    if rule == "none" or cfg.mode != "grad":
        return ""
    typical = max(0, -(-workers // accumulate) - 1)
    factor = staleness_factor(typical, ref, rule)
    return f"; scale.staleness={rule}: x{factor:.3g} at staleness {typical} (1 up to {ref})"


def experience_spec(cfg: Config, obs_space: gym.Space, action_space: gym.Space) -> ExperienceSpec:
    """The shape of every rollout a worker of this job sends in mode=data and mode=central."""
    obs_dtype = np.float32 if cfg.env.normalize_obs else obs_space.dtype  # normalized observations are float32
    discrete = isinstance(action_space, gym.spaces.Discrete)
    return ExperienceSpec(
        rollout_len=cfg.worker.rollout_len,
        envs=cfg.worker.envs_per_worker,
        obs_shape=tuple(obs_space.shape),
        obs_dtype=torch.from_numpy(np.zeros(0, obs_dtype)).dtype,
        action_shape=tuple(action_space.shape or ()),
        num_actions=int(action_space.n) if discrete else None,
    )
