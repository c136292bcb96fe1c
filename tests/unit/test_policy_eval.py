"""Evaluation during training (eval.*): whole episodes of the current weights on envs of their own, seeded
apart from training, logged against the env step of the weights, and a stop on the evaluated return."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from distributed_a3c.config import Config, ConfigError, validate
from distributed_a3c.envs import make_vector_env
from distributed_a3c.models import build_model
from distributed_a3c.policy_eval import EVAL_SEED_OFFSET, PeriodicEvaluator, PolicyEvaluator, eval_seed
from distributed_a3c.rl.grads import flatten_parameters_
from distributed_a3c.server import ParameterServer
from distributed_a3c.trainer import run_serial
from distributed_a3c.worker.gradient import worker_seed


def _weights(cfg: Config, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    env = make_vector_env(cfg.env, 1, 0)
    model = build_model(cfg, env.single_observation_space, env.single_action_space)
    return flatten_parameters_(model).weights.detach().clone()


def test_each_evaluation_plays_one_whole_episode_per_env() -> None:
    cfg = Config(seed=3)
    cfg.eval.episodes = 7
    cfg.env.max_episode_steps = 30
    result = PolicyEvaluator(cfg).evaluate(_weights(cfg), None, evaluation=0, global_step=1234, version=5)
    assert len(result.returns) == len(result.lengths) == 7
    assert all(1 <= n <= 30 for n in result.lengths)
    assert result.returns == [float(n) for n in result.lengths]  # CartPole pays 1 per step
    row = result.row()
    assert row["global_step"] == 1234 and row["eval/version"] == 5 and row["eval/episodes"] == 7
    assert row["eval/min_return"] <= row["eval/mean_return"] <= row["eval/max_return"]


def test_evaluation_plays_to_its_own_time_limit_when_training_episodes_are_cut() -> None:
    cfg = Config(seed=3)
    cfg.eval.episodes = 7
    cfg.env.max_episode_steps = 5  # training's cut
    lengths = PolicyEvaluator(cfg).evaluate(_weights(cfg), None, evaluation=0, global_step=0, version=0).lengths
    assert max(lengths) == 5
    cfg.eval.max_episode_steps = 30
    lengths = PolicyEvaluator(cfg).evaluate(_weights(cfg), None, evaluation=0, global_step=0, version=0).lengths
    assert max(lengths) > 5 and all(n <= 30 for n in lengths)


def test_evaluations_are_seeded_apart_from_training_and_reproducible() -> None:
    cfg = Config(seed=3)
    weights = _weights(cfg)
    evaluator = PolicyEvaluator(cfg)
    first = evaluator.evaluate(weights, None, 0, 0, 0).returns
    assert evaluator.evaluate(weights, None, 0, 0, 0).returns == first  # same weights and evaluation: same play
    assert evaluator.evaluate(weights, None, 1, 0, 0).returns != first  # the next evaluation: other episodes
    # No evaluation env shares a seed with a training env of any of 10,000 ranks.
    training = {worker_seed(cfg.seed, r) + i for r in range(10_000) for i in range(0, 1000, 97)}
    evaluating = {eval_seed(cfg.seed, k) + i for k in range(100) for i in range(cfg.eval.episodes)}
    assert not training & evaluating
    assert eval_seed(cfg.seed, 0) == cfg.seed + EVAL_SEED_OFFSET


def test_evaluation_does_not_draw_from_the_training_random_streams() -> None:
    cfg = Config(seed=3)
    weights = _weights(cfg)
    torch.manual_seed(0)
    PolicyEvaluator(cfg).evaluate(weights, None, 0, 0, 0)
    after_eval = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after_eval)


def test_greedy_evaluation_acts_on_the_argmax() -> None:
    cfg = Config(seed=3)
    cfg.eval.greedy = True
    weights = _weights(cfg)
    evaluator = PolicyEvaluator(cfg)
    a, b = evaluator.evaluate(weights, None, 0, 0, 0), evaluator.evaluate(weights, None, 0, 0, 0)
    assert a.returns == b.returns


def test_periodic_evaluation_runs_at_each_multiple_of_the_interval() -> None:
    cfg = Config(seed=3)
    cfg.eval.interval_env_steps = 1000
    cfg.eval.episodes = 2
    cfg.env.max_episode_steps = 5
    weights = _weights(cfg)
    periodic = PeriodicEvaluator(cfg, background=False)
    snapshot = lambda: (7, weights, None)  # noqa: E731
    assert periodic.poll(999, snapshot) == []
    done = periodic.poll(1000, snapshot)
    assert [r.global_step for r in done] == [1000] and done[0].version == 7
    assert periodic.poll(1500, snapshot) == []
    assert [r.global_step for r in periodic.poll(3700, snapshot)] == [3700]  # 2000 and 3000 were passed by
    assert periodic.poll(3999, snapshot) == [] and len(periodic.poll(4000, snapshot)) == 1
    periodic.close()
    resumed = PeriodicEvaluator(cfg, background=False, evaluations_done=3, after_step=4200)
    assert resumed.poll(4900, snapshot) == [] and resumed.poll(5000, snapshot)[0].global_step == 5000
    assert resumed.count == 4


def test_background_evaluation_reports_on_a_later_poll() -> None:
    cfg = Config(seed=3)
    cfg.eval.interval_env_steps = 100
    cfg.eval.episodes = 2
    weights = _weights(cfg)
    periodic = PeriodicEvaluator(cfg, background=True)
    results = periodic.poll(100, lambda: (1, weights, None))
    for _ in range(200):
        if results:
            break
        time.sleep(0.05)
        results = periodic.poll(150, lambda: (1, weights, None))
    periodic.close()
    assert len(results) == 1 and results[0].global_step == 100


def _held_evaluations(max_pending: int) -> tuple[PeriodicEvaluator, threading.Event]:
    """A background evaluator whose evaluations wait for the event; polled at 100, 200, 300 and 400 env
    steps: 100 plays (held), the others queue while they fit."""
    cfg = Config(seed=3)
    cfg.eval.interval_env_steps = 100
    cfg.eval.episodes = 2
    cfg.eval.max_pending = max_pending
    weights = _weights(cfg)
    periodic = PeriodicEvaluator(cfg, background=True)
    release, play = threading.Event(), periodic.evaluator.evaluate

    def held_evaluate(*args):
        release.wait(30)
        return play(*args)

    periodic.evaluator.evaluate = held_evaluate
    for step in (100, 200, 300, 400):
        assert periodic.poll(step, lambda: (1, weights, None)) == []
    return periodic, release


def test_slow_background_evaluations_keep_to_the_grid_and_skip_only_past_the_queue() -> None:
    """Weights due while an evaluation plays wait their turn (up to eval.max_pending): the results come in
    order at the multiples they were taken at; one due on a full queue is skipped and counted."""
    periodic, release = _held_evaluations(max_pending=2)  # 200 and 300 wait, 400 finds the queue full
    release.set()
    results, deadline = [], time.monotonic() + 30
    while len(results) < 3 and time.monotonic() < deadline:
        results += periodic.poll(450, lambda: pytest.fail("no weights are due at 450"))
        time.sleep(0.01)
    periodic.close()
    assert [r.global_step for r in results] == [100, 200, 300] and periodic.skipped == 1


def test_draining_plays_the_queued_weights_in_order_until_one_satisfies() -> None:
    """At the end of a run the weights still queued are played in the order taken, up to the first that
    reaches the target; those after it stay unplayed."""
    periodic, release = _held_evaluations(max_pending=4)
    release.set()
    done = periodic.drain(lambda r: r.global_step == 300, time.monotonic() + 60)
    assert [r.global_step for r in done] == [100, 200, 300] and len(periodic._queue) == 1
    assert periodic.drain(lambda r: False, time.monotonic() - 1) == []  # past its deadline: plays nothing
    periodic.close()


def test_training_stops_on_the_evaluated_return_when_asked(tmp_path: Path) -> None:
    """target_source=eval: the stop waits for the evaluation, not for 100 finished training episodes."""
    cfg = Config(seed=1)
    cfg.eval.interval_env_steps = 10_000
    cfg.train.target_source = "eval"
    cfg.train.target_return = 100.0
    cfg.train.total_env_steps = 400_000
    cfg.logger.wandb.mode, cfg.logger.progress = "disabled", False
    validate(cfg)
    summary = run_serial(cfg, tmp_path, OmegaConf.to_container(OmegaConf.structured(cfg)), workers=2)
    assert summary["exit_reason"] == "target_return", summary
    ev = summary["eval"]
    assert ev["last_mean_return"] >= 100.0 and ev["first_global_step_at_target"] == ev["last_global_step"]
    assert ev["evaluations"] == ev["last_global_step"] // 10_000
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/mean_return" in r]
    # Each at the first push round (2 workers x one push) past a multiple of the interval.
    round_steps = 2 * cfg.worker.rollout_len * cfg.worker.envs_per_worker
    assert all(0 <= r["global_step"] - 10_000 * (k + 1) < round_steps for k, r in enumerate(evals)), evals
    assert all(r["eval/mean_return"] < 100.0 for r in evals[:-1]) and evals[-1]["eval/mean_return"] >= 100.0


def test_the_lead_evaluates_the_whole_vector_of_a_sharded_server() -> None:
    cfg = Config(seed=3)
    weights = _weights(cfg)
    env = make_vector_env(cfg.env, 1, 0)
    model = build_model(cfg, env.single_observation_space, env.single_action_space)
    cfg.server.shards = 2
    lead = ParameterServer(model, cfg.optim, cfg.server, cfg.train, shard=0)
    lead.flat.weights.copy_(weights)
    version, snapshot, _ = lead.weights_snapshot()
    assert version == 0 and torch.equal(snapshot, weights) and snapshot.data_ptr() != lead.flat.weights.data_ptr()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"interval_env_steps": -1}, "eval.interval_env_steps=-1 is invalid: must be >= 0"),
        ({"episodes": 0}, "eval.episodes=0 is invalid: must be >= 1"),
        ({"max_pending": 0}, "eval.max_pending=0 is invalid: must be >= 1"),
        ({"max_episode_steps": 0}, "eval.max_episode_steps=0 is invalid: must be >= 1 or null (the training envs')"),
    ],
)
def test_bad_evaluation_settings_are_refused_in_one_line(overrides: dict, message: str) -> None:
    cfg = Config()
    for key, value in overrides.items():
        setattr(cfg.eval, key, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(cfg)


def test_a_stop_on_the_evaluation_needs_evaluation_on() -> None:
    cfg = Config()
    cfg.train.target_source = "eval"
    with pytest.raises(ConfigError, match=r"train.target_source='eval' is invalid: must be train while evaluation"):
        validate(cfg)
    cfg.train.target_source = "episodes"
    with pytest.raises(ConfigError, match=r"train.target_source='episodes' is invalid: must be one of train, eval"):
        validate(cfg)
    cfg.train.target_source = "eval"
    cfg.eval.interval_env_steps = 5000
    validate(cfg)
