"""The rules between configuration values, read group by group; every broken rule is one line.

`validate` raises them all at once; envs/checks.py adds the rules that need gymnasium.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from distributed_a3c.config.choices import (
    ACTIVATIONS,
    CONVS,
    ENV_BACKENDS,
    EXPERIENCE_MODES,
    MODELS,
    MODES,
    OBJECTIVES,
    OPTIMIZERS,
    RPC_CHANNELS,
    RPC_TRANSPORTS,
    SERVER_DEVICES,
    STEP_BOUND_KEYS,
    TARGET_SOURCES,
    VECTORIZATIONS,
    WANDB_MODES,
    WIRE_DTYPE_NAMES,
)
from distributed_a3c.rl.scaling import SCALING_RULES, STALENESS_RULES

if TYPE_CHECKING:
    from distributed_a3c.config.schema import Config, EnvConfig


class ConfigError(ValueError):
    """One or more configuration values break a rule; the message lists each of them."""


def validate(cfg: Config) -> Config:
    """Raise ConfigError listing every broken rule; return `cfg` unchanged when it is valid."""
    errors = config_errors(cfg)
    if errors:
        raise ConfigError("; ".join(errors))
    return cfg


def _check(errors: list[str], ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        errors.append(f"{key}={value!r} is invalid: must be {allowed}")


def _choice(errors: list[str], key: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(errors, value in allowed, key, value, "one of " + ", ".join(allowed))


def config_errors(cfg: Config) -> list[str]:
    """Every broken rule in `cfg`, one line each, read group by group (empty when the config is valid).

    Whether the env exists and its optional packages are installed is envs/checks.py's to say (it
    imports gymnasium): `envs.checks.all_errors` reports both at once.
    """
    e: list[str] = []
    for group_errors in (_env_errors, _model_errors, _optim_errors, _algo_errors, _worker_errors):
        group_errors(e, cfg)
    for group_errors in (_server_errors, _rpc_errors, _train_errors, _eval_errors, _scale_errors, _top_level_errors):
        group_errors(e, cfg)
    return e


def _env_errors(e: list[str], cfg: Config) -> None:
    env = cfg.env
    _choice(e, "env.vectorization", env.vectorization, VECTORIZATIONS)
    _check(
        e,
        env.max_episode_steps is None or env.max_episode_steps >= 1,
        "env.max_episode_steps",
        env.max_episode_steps,
        "null or >= 1",
    )
    _atari_errors(e, env)


def _model_errors(e: list[str], cfg: Config) -> None:
    m = cfg.model
    _choice(e, "model.name", m.name, MODELS)
    _choice(e, "model.conv", m.conv, CONVS)
    _check(
        e,
        m.name != "cnn" or m.shared_torso,
        "model.shared_torso",
        m.shared_torso,
        "true for model=cnn (one conv torso feeds both heads)",
    )
    _check(
        e,
        m.name == "cnn" or not cfg.env.id.startswith("ALE/"),
        "model.name",
        m.name,
        "cnn for ALE/... ids (image observations): add model=cnn",
    )
    _choice(e, "model.activation", m.activation, ACTIVATIONS)
    _check(
        e,
        len(m.hidden_sizes) >= 1 and all(h >= 1 for h in m.hidden_sizes),
        "model.hidden_sizes",
        list(m.hidden_sizes),
        "a non-empty list of sizes >= 1",
    )
    _check(e, m.lstm_size >= 1, "model.lstm_size", m.lstm_size, ">= 1")
    _check(
        e,
        m.name != "lstm" or m.shared_torso,
        "model.shared_torso",
        m.shared_torso,
        "true for model=lstm (one recurrent torso feeds both heads)",
    )


def _optim_errors(e: list[str], cfg: Config) -> None:
    o = cfg.optim
    _choice(e, "optim.name", o.name, OPTIMIZERS)
    _check(e, o.lr > 0, "optim.lr", o.lr, "> 0")
    _check(e, o.eps > 0, "optim.eps", o.eps, "> 0")
    _check(e, 0 <= o.alpha < 1, "optim.alpha", o.alpha, "in [0, 1)")
    _check(e, 0 <= o.beta1 < 1, "optim.beta1", o.beta1, "in [0, 1)")
    _check(e, 0 <= o.beta2 < 1, "optim.beta2", o.beta2, "in [0, 1)")


def _algo_errors(e: list[str], cfg: Config) -> None:
    a = cfg.algo
    _check(e, 0 < a.gamma <= 1, "algo.gamma", a.gamma, "in (0, 1]")
    _check(e, 0 <= a.gae_lambda <= 1, "algo.gae_lambda", a.gae_lambda, "in [0, 1]")
    _check(e, a.value_coef >= 0, "algo.value_coef", a.value_coef, ">= 0")
    _check(e, a.entropy_coef >= 0, "algo.entropy_coef", a.entropy_coef, ">= 0")
    _check(e, a.max_grad_norm >= 0, "algo.max_grad_norm", a.max_grad_norm, ">= 0 (0 disables)")


def _worker_errors(e: list[str], cfg: Config) -> None:
    w = cfg.worker
    _check(e, w.envs_per_worker >= 1, "worker.envs_per_worker", w.envs_per_worker, ">= 1")
    _check(e, w.rollout_len >= 1, "worker.rollout_len", w.rollout_len, ">= 1")
    _check(e, w.torch_threads >= 1, "worker.torch_threads", w.torch_threads, ">= 1")


def _server_errors(e: list[str], cfg: Config) -> None:
    s = cfg.server
    _check(e, s.accumulate >= 0, "server.accumulate", s.accumulate, ">= 0 (0: auto, 1: every push its own step)")
    _check(
        e,
        not (s.fold and s.accumulate > 1),
        "server.fold",
        s.fold,
        "false when server.accumulate > 1 (both sum pushes into one step; pick one)",
    )
    _check(e, s.max_staleness >= 0, "server.max_staleness", s.max_staleness, ">= 0")
    _check(e, s.shards >= 1, "server.shards", s.shards, ">= 1")
    _choice(e, "server.placement", s.placement, ("auto", "packed", "spread"))
    _check(e, s.aggregate_window_ms > 0, "server.aggregate_window_ms", s.aggregate_window_ms, "> 0")
    _check(
        e,
        not s.node_aggregate or cfg.mode == "grad",
        "server.node_aggregate",
        s.node_aggregate,
        f"false for mode={cfg.mode} (a node's aggregator sums gradients: mode=grad only)",
    )
    _choice(e, "server.device", s.device, SERVER_DEVICES)
    _choice(e, "server.wire_dtype", s.wire_dtype, WIRE_DTYPE_NAMES)


def _rpc_errors(e: list[str], cfg: Config) -> None:
    r = cfg.rpc
    _check(e, r.port is None or 1 <= r.port <= 65535, "rpc.port", r.port, "null or a TCP port in 1..65535")
    _check(e, r.timeout_s > 0, "rpc.timeout_s", r.timeout_s, "> 0")
    _check(
        e,
        0 < r.liveness_timeout_s <= r.timeout_s,
        "rpc.liveness_timeout_s",
        r.liveness_timeout_s,
        f"> 0 and at most rpc.timeout_s={r.timeout_s:g} (a silent peer must be noticed before a call times out)",
    )
    _check(e, r.num_threads >= 1, "rpc.num_threads", r.num_threads, ">= 1")
    transports = list(r.transports)
    ok = "uv" in transports and len(set(transports)) == len(transports) and set(transports) <= set(RPC_TRANSPORTS)
    allowed = ", ".join(RPC_TRANSPORTS)
    _check(
        e,
        ok,
        "rpc.transports",
        transports,
        f"distinct names from {allowed}, best first, including uv (TCP: the one every pair of ranks can use)",
    )
    if r.channels is not None:
        channels = list(r.channels)
        ok = "basic" in channels and len(set(channels)) == len(channels) and set(channels) <= set(RPC_CHANNELS)
        allowed = ", ".join(RPC_CHANNELS)
        _check(e, ok, "rpc.channels", channels, f"null, or distinct names from {allowed}, best first, including basic")


def _train_errors(e: list[str], cfg: Config) -> None:
    t = cfg.train
    _check(e, t.total_env_steps >= 1, "train.total_env_steps", t.total_env_steps, ">= 1")
    _check(e, t.max_minutes is None or t.max_minutes > 0, "train.max_minutes", t.max_minutes, "null or > 0")
    _check(e, t.log_interval_s > 0, "train.log_interval_s", t.log_interval_s, "> 0")
    _check(e, t.checkpoint_interval_s > 0, "train.checkpoint_interval_s", t.checkpoint_interval_s, "> 0")
    _check(e, t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, ">= 1")
    _check(e, t.max_restarts >= 0, "train.max_restarts", t.max_restarts, ">= 0")
    _choice(e, "train.target_source", t.target_source, TARGET_SOURCES)
    allowed = ", ".join(f"{name} ({direction})" for name, direction in OBJECTIVES.items())
    _check(e, t.objective in OBJECTIVES, "train.objective", t.objective, f"one of {allowed}")
    _check(
        e,
        t.target_source != "eval" or cfg.eval.interval_env_steps > 0,
        "train.target_source",
        t.target_source,
        f"train while evaluation is off (eval.interval_env_steps={cfg.eval.interval_env_steps}): "
        "set eval.interval_env_steps > 0 to stop on the evaluated return",
    )


def _scale_errors(e: list[str], cfg: Config) -> None:
    c = cfg.scale
    _choice(e, "scale.rule", c.rule, SCALING_RULES)
    _check(
        e,
        c.reference_batch is None or c.reference_batch >= 1,
        "scale.reference_batch",
        c.reference_batch,
        "null (one worker's push) or a number of env steps >= 1",
    )
    _check(e, c.workers_per_step >= 1, "scale.workers_per_step", c.workers_per_step, ">= 1")
    for key in STEP_BOUND_KEYS.values():
        value, allowed = getattr(c, key), "null (every worker's whole push) or a number of env steps >= 1"
        _check(e, value is None or value >= 1, f"scale.{key}", value, allowed)
    _choice(e, "scale.staleness", c.staleness, STALENESS_RULES)
    _check(e, c.staleness_reference >= 0, "scale.staleness_reference", c.staleness_reference, ">= 0")


def _eval_errors(e: list[str], cfg: Config) -> None:
    v = cfg.eval
    _check(e, v.interval_env_steps >= 0, "eval.interval_env_steps", v.interval_env_steps, ">= 0 (0: no evaluation)")
    _check(e, v.episodes >= 1, "eval.episodes", v.episodes, ">= 1")
    _check(e, v.max_pending >= 1, "eval.max_pending", v.max_pending, ">= 1")
    limit = v.max_episode_steps
    _check(e, limit is None or limit >= 1, "eval.max_episode_steps", limit, ">= 1 or null (the training envs')")


def _top_level_errors(e: list[str], cfg: Config) -> None:
    _choice(e, "mode", cfg.mode, MODES)
    if cfg.mode == "sync":  # one step per weight version: nothing to accumulate, fold or split
        s = cfg.server
        _check(
            e, s.accumulate <= 1, "server.accumulate", s.accumulate, "0 or 1 for mode=sync (it averages every worker)"
        )
        _check(e, not s.fold, "server.fold", s.fold, "false for mode=sync")
        _check(e, s.shards == 1, "server.shards", s.shards, "1 for mode=sync")
        _check(e, not cfg.worker.overlap, "worker.overlap", cfg.worker.overlap, "false for mode=sync")
    if cfg.mode in EXPERIENCE_MODES:  # one learner holds the whole model and steps per batch of rollouts
        s, m = cfg.server, cfg.mode
        _check(
            e,
            s.accumulate <= 1,
            "server.accumulate",
            s.accumulate,
            f"0 or 1 for mode={m} (its learner batches rollouts)",
        )
        _check(e, s.shards == 1, "server.shards", s.shards, f"1 for mode={m} (one learner holds the whole model)")
        _check(
            e,
            cfg.model.name != "lstm",
            "model.name",
            cfg.model.name,
            f"mlp or cnn for mode={m} (its learner values rollouts without a recurrent state): use mode=grad or sync",
        )
    if cfg.mode == "central":
        _check(
            e,
            not cfg.worker.overlap,
            "worker.overlap",
            cfg.worker.overlap,
            "false for mode=central (workers wait for their actions)",
        )
    c = cfg.central
    _check(e, c.max_batch >= 0, "central.max_batch", c.max_batch, ">= 0 (0: no limit)")
    _check(e, c.max_wait_ms >= 0, "central.max_wait_ms", c.max_wait_ms, ">= 0")
    _choice(e, "logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    _check(
        e,
        not cfg.logger.tensorboard or importlib.util.find_spec("tensorboard") is not None,
        "logger.tensorboard",
        cfg.logger.tensorboard,
        "false while tensorboard is not installed: pip install 'distributed_a3c[tensorboard]'",
    )
    _check(e, cfg.workers >= 1, "workers", cfg.workers, ">= 1")
    _check(e, cfg.seed >= 0, "seed", cfg.seed, ">= 0")


def _atari_errors(e: list[str], env: EnvConfig) -> None:
    _choice(e, "env.backend", env.backend, ENV_BACKENDS)
    _check(
        e,
        env.backend not in ENV_BACKENDS or env.backend == "gymnasium" or env.id.startswith("ALE/"),
        "env.backend",
        env.backend,
        f"gymnasium for env.id={env.id!r} (ale_vector and envpool run ALE/... ids only)",
    )
    a = env.atari
    _check(e, a.noop_max >= 0, "env.atari.noop_max", a.noop_max, ">= 0 (0 disables)")
    _check(e, a.frame_skip >= 1, "env.atari.frame_skip", a.frame_skip, ">= 1")
    _check(e, a.screen_size >= 36, "env.atari.screen_size", a.screen_size, ">= 36 (the CNN's smallest input)")
    _check(e, a.frame_stack >= 1, "env.atari.frame_stack", a.frame_stack, ">= 1")
    _check(
        e,
        0 <= a.repeat_action_probability <= 1,
        "env.atari.repeat_action_probability",
        a.repeat_action_probability,
        "in [0, 1]",
    )
    _check(e, a.num_threads >= 0, "env.atari.num_threads", a.num_threads, ">= 0 (0 lets the backend choose)")
    _check(
        e,
        not (env.normalize_obs and env.id.startswith("ALE/")),
        "env.normalize_obs",
        env.normalize_obs,
        "false for ALE/... ids (uint8 frames; model=cnn scales them by 1/255)",
    )
    _check(
        e,
        not (env.vectorization == "vector" and env.id.startswith("ALE/")),
        "env.vectorization",
        env.vectorization,
        "sync or async for ALE/... ids: env.backend=ale_vector is ale_py's batched env, with env.atari applied",
    )
