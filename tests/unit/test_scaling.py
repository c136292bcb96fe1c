"""How the step follows the job's size (rl/scaling.py): the rules as pure functions, the server applying
them to the batch of each optimizer step, and `server.accumulate=0` resolved from the worker count."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distributed_a3c.build import build_server, fit_to_workers, pushes_per_step, scaling_line
from distributed_a3c.config import Config, ConfigError, OptimConfig, ScaleConfig, ServerConfig, TrainConfig, validate
from distributed_a3c.config.unused import unused_options
from distributed_a3c.messages import GradientPush
from distributed_a3c.rl.scaling import (
    auto_accumulate,
    fitted_push_shape,
    pushes_to_reach,
    resolve_rule,
    scaled_lr,
    staleness_factor,
)
from distributed_a3c.server import ParameterServer, SynchronousServer
from distributed_a3c.server.optim import FlatOptimizer
from distributed_a3c.server.placement import plan

NO_STOP = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None)
ADAM = OptimConfig(name="adam", lr=0.01, beta1=0.0)


def test_auto_accumulate_sums_the_pushes_of_each_group_of_workers() -> None:
    assert [auto_accumulate(n) for n in (1, 2, 3, 4, 7, 8, 16, 32, 64)] == [1, 1, 1, 1, 1, 2, 4, 8, 16]
    assert auto_accumulate(16, workers_per_step=2) == 8
    with pytest.raises(ValueError, match="workers=0"):
        auto_accumulate(0)


@pytest.mark.parametrize(
    ("rule", "batch", "expected"),
    [("sqrt", 640, 2e-3 * 2), ("sqrt", 160, 2e-3), ("linear", 640, 2e-3 * 4), ("none", 640, 2e-3), ("sqrt", 40, 1e-3)],
)
def test_the_learning_rate_follows_the_batch(rule: str, batch: int, expected: float) -> None:
    assert math.isclose(scaled_lr(2e-3, batch, 160, rule), expected)


def test_pushes_are_summed_until_a_step_is_as_large_as_the_tuned_one() -> None:
    assert [pushes_to_reach(80, push) for push in (80, 160, 40, 20, 15, 79)] == [1, 1, 2, 4, 6, 2]
    with pytest.raises(ValueError, match="must be >= 1"):
        pushes_to_reach(80, 0)


def test_scaled_lr_refuses_what_it_cannot_take() -> None:
    with pytest.raises(ValueError, match="rule='cubic' is invalid"):
        scaled_lr(1e-3, 10, 10, "cubic")
    with pytest.raises(ValueError, match="rule='auto' is invalid.*resolve auto first"):
        scaled_lr(1e-3, 10, 10, "auto")
    with pytest.raises(ValueError, match="must be > 0"):
        scaled_lr(1e-3, 10, 0, "sqrt")


@pytest.mark.parametrize(
    ("mode", "node_aggregate", "expected"),
    [("sync", False, "sqrt"), ("grad", True, "sqrt"), ("grad", False, "none"), ("data", False, "none")]
    + [("central", False, "none")],
)
def test_auto_takes_the_square_root_rule_where_a_step_sums_workers_by_design(
    mode: str, node_aggregate: bool, expected: str
) -> None:
    assert resolve_rule("auto", mode, node_aggregate) == expected
    assert resolve_rule("linear", mode, node_aggregate) == "linear"  # an explicit rule is kept


@pytest.mark.parametrize(("mode", "factor"), [("sync", 2.0), ("grad", 1.0), ("data", 1.0)])
def test_the_default_job_of_four_workers_steps_at_its_modes_rate(mode: str, factor: float) -> None:
    cfg = Config(mode=mode)
    validate(cfg)
    server = build_server(cfg, 0, 5, None)  # 1 server + 4 workers: a sync step averages 4 pushes
    pushes = 4 if mode == "sync" else 1
    assert math.isclose(server.step_lr(pushes), cfg.optim.lr * factor)


@pytest.mark.parametrize(
    ("staleness", "rule", "expected"),
    [(0, "sqrt", 1.0), (1, "sqrt", 1.0), (3, "sqrt", math.sqrt(2 / 4)), (15, "sqrt", math.sqrt(2 / 16))]
    + [(15, "inverse", 2 / 16), (1, "inverse", 1.0), (15, "none", 1.0)],
)
def test_the_rate_falls_with_staleness_beyond_the_reference(staleness: int, rule: str, expected: float) -> None:
    assert math.isclose(staleness_factor(staleness, 1, rule), expected)


def test_staleness_factor_refuses_what_it_cannot_take() -> None:
    with pytest.raises(ValueError, match="rule='half' is invalid: must be one of sqrt, inverse, none"):
        staleness_factor(3, 1, "half")
    with pytest.raises(ValueError, match=r"staleness \(-1\)"):
        staleness_factor(-1, 1, "sqrt")


def test_each_push_steps_at_the_rate_of_its_own_staleness() -> None:
    """Four pushes computed on version 0 arrive one after another: staleness 0, 1, 2, 3; with the sqrt rule
    and reference 1 their steps take lr x 1, 1, sqrt(2/3), sqrt(2/4), and server/lr reports their mean."""
    server = _server(rule="none", staleness="sqrt")
    start = server.flat.weights.detach().clone()
    grads = [torch.randn(server.num_params, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    for g in grads:
        server.push(GradientPush(rank=1, version=0, grads=g, env_steps=160))
    param = start.clone()
    optimizer = FlatOptimizer(param, ADAM)
    factors = [1.0, 1.0, math.sqrt(2 / 3), math.sqrt(2 / 4)]
    for g, factor in zip(grads, factors, strict=True):
        optimizer.step(g, 0.01 * factor)
    torch.testing.assert_close(server.flat.weights, param)
    assert math.isclose(server.snapshot()["server/lr"], 0.01 * sum(factors) / 4)


def _server(
    kind=ParameterServer, accumulate: int = 1, rule: str = "sqrt", reference: int | None = None, staleness="none"
):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    scale = ScaleConfig(rule=rule, reference_batch=reference, staleness=staleness)
    return kind(model, ADAM, ServerConfig(accumulate=accumulate), NO_STOP, env_steps_per_push=160, scale=scale)


def test_an_accumulated_step_uses_the_scaled_rate() -> None:
    server = _server(accumulate=4)
    start = server.flat.weights.detach().clone()
    grads = [torch.randn(server.num_params, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    for g in grads:
        server.push(GradientPush(rank=1, version=server.version, grads=g, env_steps=160))
    param = start.clone()
    FlatOptimizer(param, OptimConfig(name="adam", lr=0.01 * math.sqrt(4), beta1=0.0)).step(torch.stack(grads).sum(0))
    torch.testing.assert_close(server.flat.weights, param)
    row = server.snapshot()
    assert math.isclose(row["server/lr"], 0.02) and row["server/batch_env_steps"] == 640


def test_a_reference_batch_sets_what_optim_lr_is_meant_for() -> None:
    server = _server(accumulate=1, reference=640)
    assert math.isclose(server.step_lr(1), 0.01 * math.sqrt(160 / 640))
    assert math.isclose(_server(rule="none", accumulate=8).step_lr(8), 0.01)


def test_a_synchronous_step_scales_with_the_workers_it_averages() -> None:
    server = _server(SynchronousServer)
    futures = [
        server.push_synchronous(GradientPush(rank=r, version=0, grads=torch.ones(server.num_params), env_steps=160), 3)
        for r in (1, 2, 3)
    ]
    assert all(f.wait().status == "applied" for f in futures)
    assert math.isclose(server.snapshot()["server/lr"], 0.01 * math.sqrt(3))


@pytest.mark.parametrize(
    ("workers", "expected"),
    [(1, (20, 32)), (4, (20, 32)), (8, (20, 16)), (16, (20, 8)), (32, (20, 4)), (128, (20, 1)), (512, (5, 1))],
)
def test_a_synchronous_step_keeps_its_size_as_workers_are_added(workers: int, expected: tuple[int, int]) -> None:
    rollout_len, envs = fitted_push_shape(20, 32, workers, 2560)
    assert (rollout_len, envs) == expected
    assert workers * rollout_len * envs <= 2560


def test_a_synchronous_push_is_never_made_larger() -> None:
    assert fitted_push_shape(20, 32, 4096, 2560) == (1, 1)  # one env step each is the least
    assert fitted_push_shape(5, 16, 2, 10**6) == (5, 16)
    assert fitted_push_shape(20, 32, 64, None) == (20, 32)  # null: every whole push
    with pytest.raises(ValueError, match="must be >= 1"):
        fitted_push_shape(20, 32, 0, 2560)


def test_sixteen_synchronous_workers_push_a_quarter_of_the_envs_at_the_rate_of_their_step() -> None:
    cfg = Config(mode="sync")
    validate(cfg)
    fitted = fit_to_workers(cfg, 16)
    assert (fitted.worker.rollout_len, fitted.worker.envs_per_worker) == (20, 8)
    assert (cfg.worker.envs_per_worker, cfg.scale.reference_batch) == (32, None)  # the job's config is left alone
    server = build_server(fitted, 0, 17, None)
    assert server.push_env_steps == 160 and server.reference_env_steps == 640  # optim.lr stays meant for 640
    assert math.isclose(server.step_lr(16), cfg.optim.lr * 2)  # 2560 env steps: sqrt(4) x
    line = scaling_line(fitted, server, 16)
    assert "8 envs x 20 steps; scale.sync_env_steps=2560" in line and "2560 env steps, lr 0.004 -> 0.008" in line
    assert fit_to_workers(Config(), 16) == Config()  # grad mode's pushes stay whole
    assert fit_to_workers(cfg, 2) == cfg


def test_sixteen_data_workers_push_a_quarter_of_the_envs_and_say_so() -> None:
    cfg = Config(mode="data")
    validate(cfg)
    fitted = fit_to_workers(cfg, 16)
    assert (fitted.worker.rollout_len, fitted.worker.envs_per_worker) == (20, 8)
    server = build_server(fitted, 0, 17, None)
    assert server.push_env_steps == 160 and server.step_lr(1) == cfg.optim.lr  # scale.rule=auto: none in data
    assert "8 envs x 20 steps each; scale.data_env_steps=2560" in scaling_line(fitted, server, 16)
    cfg.scale.data_env_steps = None
    assert fit_to_workers(cfg, 16) == cfg  # null: whole pushes
    assert fit_to_workers(Config(mode="central"), 16) == Config(mode="central")


@pytest.mark.parametrize(
    ("changes", "workers", "expected"),
    [
        ({}, 64, 1),
        ({"server.accumulate": 0}, 2, 1),
        ({"server.accumulate": 0}, 16, 4),
        ({"server.accumulate": 0}, 64, 16),
        ({"server.accumulate": 0, "scale.workers_per_step": 8}, 64, 8),
        ({"server.accumulate": 3}, 64, 3),
        ({"server.accumulate": 0, "server.fold": True}, 64, 1),
        ({"server.accumulate": 0, "mode": "sync"}, 64, 1),
        ({"server.accumulate": 0, "mode": "data"}, 64, 1),
        ({"server.accumulate": 0, "scale.reference_batch": 320, "worker.envs_per_worker": 4}, 8, 4),
        ({"server.accumulate": 0, "scale.reference_batch": 320, "worker.envs_per_worker": 16}, 2, 1),
        ({"server.accumulate": 0, "scale.reference_batch": 320, "worker.envs_per_worker": 16}, 64, 1),
        ({"server.accumulate": 0, "scale.reference_batch": 320, "worker.envs_per_worker": 3}, 4, 6),
        ({"server.accumulate": 0, "scale.reference_batch": 320, "worker.envs_per_worker": 4, "mode": "data"}, 8, 1),
    ],
)
def test_auto_accumulate_is_resolved_per_job(changes: dict, workers: int, expected: int) -> None:
    cfg = Config()
    for key, value in changes.items():
        obj = cfg
        *path, last = key.split(".")
        for part in path:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    validate(cfg)
    assert pushes_per_step(cfg, workers) == expected


@pytest.mark.parametrize(
    ("group", "key", "value", "message"),
    [
        ("scale", "rule", "cubic", "scale.rule='cubic' is invalid: must be one of auto, sqrt, linear, none"),
        ("scale", "reference_batch", 0, "scale.reference_batch=0 is invalid: must be null (one worker's push)"),
        ("scale", "reference_batch", -5, "scale.reference_batch=-5 is invalid"),
        ("scale", "workers_per_step", 0, "scale.workers_per_step=0 is invalid: must be >= 1"),
        ("scale", "sync_env_steps", 0, "scale.sync_env_steps=0 is invalid: must be null (every worker's whole push)"),
        ("scale", "sync_env_steps", -640, "scale.sync_env_steps=-640 is invalid"),
        ("scale", "data_env_steps", 0, "scale.data_env_steps=0 is invalid: must be null (every worker's whole push)"),
        ("scale", "staleness", "half", "scale.staleness='half' is invalid: must be one of sqrt, inverse, none"),
        ("scale", "staleness_reference", -1, "scale.staleness_reference=-1 is invalid: must be >= 0"),
        ("server", "accumulate", -1, "server.accumulate=-1 is invalid: must be >= 0"),
    ],
)
def test_bad_scaling_options_are_refused_in_one_line(group: str, key: str, value: object, message: str) -> None:
    cfg = Config()
    setattr(getattr(cfg, group), key, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(cfg)


@pytest.mark.parametrize(("rule", "factor"), [("sqrt", 2.0), ("auto", 2.0), ("none", 1.0)])
def test_an_aggregated_push_learns_at_the_rate_of_the_worker_pushes_it_sums(rule: str, factor: float) -> None:
    """2 nodes of 5 ranks with node aggregation: node 0 holds the server, an aggregator and 3 workers, node 1
    an aggregator and 4. optim.lr is meant for one worker's push, so a forwarded push of 4 learns at 2x."""
    cfg = Config()
    cfg.scale.rule, cfg.server.node_aggregate = rule, True
    validate(cfg)
    layout = plan(10, 1, "packed", node_aggregate=True, local_world_size=5, nodes=2)
    assert layout.aggregators == [1, 5] and layout.pushes_per_forward() == 4
    server = build_server(cfg, 0, 10, None, layout)
    one_push = cfg.worker.rollout_len * cfg.worker.envs_per_worker
    assert server.push_env_steps == 4 * one_push and server.reference_env_steps == one_push
    assert math.isclose(server.step_lr(1), cfg.optim.lr * factor)


def test_a_synchronous_step_size_given_to_another_mode_is_said_unused() -> None:
    grad = Config()
    grad.scale.sync_env_steps = 1000
    assert unused_options(grad, Config()) == [
        "scale.sync_env_steps=1000 is unused with mode=grad (it applies to mode=sync)"
    ]
    sync = Config(mode="sync")
    sync.scale.sync_env_steps = 1000
    assert unused_options(sync, Config()) == []
    sync.scale.data_env_steps = 1000
    assert unused_options(sync, Config()) == [
        "scale.data_env_steps=1000 is unused with mode=sync (it applies to mode=data)"
    ]
