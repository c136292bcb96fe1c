"""The run lifecycle, one module, whatever carries the pushes: resume the server (built by build.py), open the
metric sinks, log and checkpoint on schedule until the stop, then the final checkpoint, summary and meta.json.

`Trainer` is driven by a loop of its caller's: `distributed/roles.py` sleeps between ticks while pushes
arrive over RPC; `run_serial` steps N in-process workers between ticks (tests, debugging, benchmarks).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distributed_a3c.build import build_server, fit_to_workers, scaling_line
from distributed_a3c.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_run_checkpoint,
    mismatch,
    save_checkpoint,
)
from distributed_a3c.config import Config, ConfigError
from distributed_a3c.metrics import JsonlSink, MetricsHub, ProgressSink, TensorBoardSink, WandbSink
from distributed_a3c.policy_eval import EvalResult, PeriodicEvaluator
from distributed_a3c.run_record import now_iso, objective_value, run_meta, run_summary, write_json
from distributed_a3c.server import ParameterServer, WorkerRoster
from distributed_a3c.worker import make_worker

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
EVAL_DRAIN_S = 120.0
"""At the end of a run stopped on its budget, the longest the lead plays weights still queued for evaluation."""


def resume_source(cfg: Config, run_dir: Path, config_dict: dict[str, Any]) -> tuple[Path | None, dict | None]:
    """The checkpoint this run continues from: the run directory's latest readable one (a restart), else
    `train.resume`, else none. Bad or foreign checkpoints are a ConfigError in one line."""
    try:
        found = latest_checkpoint(run_dir, cfg.train.keep_checkpoints) if cfg.train.auto_resume else None
        if found is None and cfg.train.resume:
            found = Path(cfg.train.resume), load_run_checkpoint(cfg.train.resume)
    except (CheckpointError, FileNotFoundError) as e:
        raise ConfigError(f"train.resume: {e}") from None
    if found is None:
        return None, None
    path, state = found
    why = mismatch(state, cfg.env.id, config_dict["model"])
    if why:
        raise ConfigError(f"checkpoint {str(path)!r} cannot continue this run: {why}")
    return path, state


class Trainer:
    """The lead's side of a run. `other_shards(stop)` fetches the other server shards' states (none
    unsharded); `roster` knows which workers live. `background_eval`: evaluations (eval.*) play on a
    thread of their own instead of inside `tick`."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        config_dict: dict[str, Any],
        server: ParameterServer,
        roster: WorkerRoster,
        resumed_from: Path | None = None,
        other_shards: Callable[[bool], list[dict]] = lambda stop: [],
        background_eval: bool = True,
    ) -> None:
        self.cfg, self.run_dir, self.config_dict = cfg, run_dir, config_dict
        self.server, self.roster, self.other_shards = server, roster, other_shards
        self.meta = run_meta(resumed_from)
        write_json(run_dir / "meta.json", self.meta)
        self.sinks: list = [JsonlSink(run_dir / "metrics.jsonl")]
        self.wandb_sink = None
        if cfg.logger.wandb.mode != "disabled":
            id_file = (resumed_from.parent if resumed_from else run_dir) / "wandb_run_id.txt"
            wandb_id = id_file.read_text().strip() if id_file.is_file() else None
            self.wandb_sink = WandbSink(cfg.logger, run_dir, cfg.name, config_dict, resume_id=wandb_id)
            self.sinks.append(self.wandb_sink)
        if cfg.logger.tensorboard:
            self.sinks.append(TensorBoardSink(run_dir))
        if cfg.logger.progress:
            self.sinks.append(ProgressSink(cfg.train.total_env_steps))
        self.hub = MetricsHub(self.sinks)
        log.info("%s", scaling_line(cfg, server, len(roster.ranks)))
        self.evaluator = None
        if cfg.eval.interval_env_steps > 0:
            stats = server.stats
            self.evaluator = PeriodicEvaluator(cfg, background_eval, len(stats.evaluations), stats.env_steps)
        now = time.monotonic()
        self._next_log = now + cfg.train.log_interval_s
        self._next_checkpoint = now + cfg.train.checkpoint_interval_s

    def tick(self) -> str | None:
        """Evaluate, log and checkpoint when due; the stop reason once training is over, else None."""
        if self.evaluator is not None:
            self._record_evaluations(self.evaluator.poll(self.server.stats.env_steps, self._eval_snapshot))
        now = time.monotonic()
        if now >= self._next_log:
            self.hub.log(self.row())
            self._next_log = now + self.cfg.train.log_interval_s
        if now >= self._next_checkpoint:
            self.save(self.other_shards(False))
            self._next_checkpoint = now + self.cfg.train.checkpoint_interval_s
        return self.server.poll_stop()

    def _eval_snapshot(self) -> tuple[int, torch.Tensor, Any]:
        """The lead's weights to evaluate; a sharded lead's other slices come from their shards."""
        version, weights, obs_stats = self.server.weights_snapshot()
        if len(self.server.bounds) > 1:
            for state, (lo, hi) in zip(self.other_shards(False), self.server.bounds[1:], strict=True):
                weights[lo:hi] = state["weights"]
        return version, weights, obs_stats

    def row(self) -> dict[str, float]:
        return {**self.server.snapshot(), "server/workers_alive": self.roster.alive}

    def _drain_evaluations(self) -> None:
        """The run ran out of env steps or minutes while weights waited for their evaluation and the stop
        is on the evaluated return: evaluate them now (the workers are gone, the cores free), so that the
        summary says whether, and at which env step, the weights reached the target."""
        train = self.cfg.train
        if train.target_source != "eval" or self.server.stop_reason not in ("total_env_steps", "max_minutes"):
            return
        reached = lambda r: train.target_return is not None and r.mean_return >= train.target_return  # noqa: E731
        self._record_evaluations(self.evaluator.drain(reached, time.monotonic() + EVAL_DRAIN_S))

    def _record_evaluations(self, results: list[EvalResult]) -> None:
        """Finished evaluations into the run's statistics (the eval stop, summary.json) and the metric sinks."""
        for result in results:
            self.server.stats.record_eval(result.global_step, result.mean_return, result.seconds)
            self.hub.log(result.row())

    def save(self, other_shards: list[dict]) -> None:
        state = self.server.state_dict(other_shards)
        state["config"] = self.config_dict
        save_checkpoint(self.run_dir / CHECKPOINT, state, keep=self.cfg.train.keep_checkpoints)

    def finish(self, world_size: int, hosts: dict[int, str] | None = None) -> dict[str, Any]:
        """After the stop: final checkpoint (when every shard answers), last row, summary, meta.json."""
        try:
            final_shards = self.other_shards(True)
        except Exception as e:  # a shard rank is gone: keep the last complete checkpoint
            log.error("could not reach every parameter-server shard (%s); checkpoint not updated", e)
            final_shards = None
        if self.evaluator is not None:
            self._drain_evaluations()
            self.evaluator.close()
        if final_shards is not None:
            self.save(final_shards)
        self.hub.log(self.row())
        for sink in self.sinks:
            if sink is not self.wandb_sink:
                sink.close()
        summary = run_summary(self.server, world_size, final_shards, self.roster)
        summary["eval"] = self.server.stats.eval_summary(self.cfg.train.target_return)
        if summary["eval"] and self.evaluator is not None:
            summary["eval"]["skipped"] = self.evaluator.skipped
        summary["objective"] = {
            "name": self.cfg.train.objective,
            "value": objective_value(summary, self.cfg.train.objective),
        }
        write_json(self.run_dir / "summary.json", summary)
        self.meta.update(end_time=now_iso(), exit_reason=summary["exit_reason"], hosts=hosts or self.meta["hosts"])
        write_json(self.run_dir / "meta.json", self.meta)
        return summary

    def close_wandb(self) -> str | None:
        """Finish the W&B run (slow: after the workers have gone); the offline run's directory, if any."""
        return self.wandb_sink.close() if self.wandb_sink else None


SERIAL_ORDERS = ("round-robin", "shuffled", "random")


def run_serial(
    cfg: Config, run_dir: Path, config_dict: dict[str, Any], workers: int = 1, order: str = "round-robin"
) -> dict[str, Any]:
    """Server and `workers` workers in this process, no RPC: each worker in turn collects a rollout and
    pushes its gradient; the same Trainer logs, checkpoints and stops. Returns the summary.

    `order` (mode=grad, data): who pushes next. `round-robin`: each worker once per round, always in rank
    order; `shuffled`: each once per round, in an order drawn per round; `random`: any worker, drawn
    each time (a worker may push several times in a row, as a fast one can over RPC). Draws are seeded
    by `cfg.seed`: every order is deterministic for a seed.
    """
    if order not in SERIAL_ORDERS:
        raise ValueError(f"order={order!r} is invalid: must be one of {', '.join(SERIAL_ORDERS)}")
    cfg = fit_to_workers(cfg, workers)
    draw = random.Random(cfg.seed)
    resumed_from, state = resume_source(cfg, run_dir, config_dict)
    world_size = 1 + workers
    server = build_server(cfg, 0, world_size, state)
    torch.set_num_threads(cfg.worker.torch_threads)
    roster = WorkerRoster(range(1, world_size))
    trainer = Trainer(cfg, run_dir, config_dict, server, roster, resumed_from, background_eval=False)
    crew = [make_worker(cfg, rank, server) for rank in range(1, world_size)]
    try:
        replies = [w.begin() for w in crew]
        while trainer.tick() is None and not all(r.stop for r in replies):
            if cfg.mode == "sync":  # every worker pushes for this version, then one averaged step answers all
                futures = [server.push_synchronous(w.prepare(), len(crew)) for w in crew]
                replies = [w.finish(f.wait()) for w, f in zip(crew, futures, strict=True)]
            elif order == "random":
                replies = [draw.choice(crew).step()]
            else:
                turn = draw.sample(crew, len(crew)) if order == "shuffled" else crew
                replies = [w.step() for w in turn]
    finally:
        for w in crew:
            w.envs.close()
        server.request_stop("error")  # no-op after a normal stop
        summary = trainer.finish(world_size)
        trainer.close_wandb()
    return summary
