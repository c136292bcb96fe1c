"""`a3c-train -m ...`: Hydra's multirun, one whole job after another, each a multi-process run of its own.

The entry point (train.py) asks here what a sweep job needs: its W&B group and name, the objective to
hand Hydra's sweeper (Optuna's, say), and the record of the jobs that failed, said one line each at the
end of the sweep, which then exits non-zero. Every combination of the sweep's values is checked before
the first job starts, so a key that does not exist fails at once, in one line.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode

from distributed_a3c.config import Config

failed_jobs: list[str] = []
"""One line per job of this sweep that failed (said at the end)."""


def is_multirun() -> bool:
    """True inside a job of `a3c-train -m ...`."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_label() -> str:
    """`#<n> (<overrides>)`: which job of the sweep this is."""
    job = HydraConfig.get().job
    return f"#{job.num} ({job.override_dirname or 'no overrides'})"


def name_the_job(cfg: Config) -> None:
    """W&B ties a sweep's runs together: group = the sweep's directory (unless logger.wandb.group is set),
    run name = the values this job overrides (unless `name` was set), which also become tags."""
    hc = HydraConfig.get()
    if cfg.logger.wandb.group is None:
        cfg.logger.wandb.group = str(Path(hc.sweep.dir)).strip("/").replace("/", "-")
    overrides = hc.job.override_dirname
    if overrides and cfg.name == Config().name:
        cfg.name = overrides
    cfg.logger.wandb.tags = [*cfg.logger.wandb.tags, *[o for o in hc.overrides.task if "=" in o]]


def record_failure(what: str) -> float:
    """Note that this job failed; its objective is nan (a sweeper records the trial as failed)."""
    failed_jobs.append(f"job {job_label()} {what}")
    return math.nan


def objective_of(run_dir: Path) -> float:
    """The objective the finished job's rank 0 wrote in its summary (train.objective)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return float(summary["objective"]["value"])


def report_and_exit() -> None:
    """After the last job: one line per failed job and a non-zero exit, or nothing."""
    if failed_jobs:
        for line in failed_jobs:
            print(f"a3c-train: error: {line}", file=sys.stderr, flush=True)
        print(f"a3c-train: error: {len(failed_jobs)} job(s) of the sweep failed", file=sys.stderr, flush=True)
        sys.exit(1)


def sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Every job's overrides of a basic sweep (`seed=1,2 optim.lr=1e-3,2e-3`: four jobs), for checking
    them before the first job runs. Sweeper-specific syntax (Optuna's `interval(...)`) is left to it."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs: list[list[str]] = [[]]
    for override in parsed:
        if override.is_hydra_override():
            continue
        try:
            values = [override.get_value_element_as_str()] if not override.is_sweep_override() else None
            if values is None:
                values = [str(v) for v in override.sweep_string_iterator()]
        except Exception:  # a sweeper's own syntax: its job will check it
            continue
        key = override.get_key_element()
        jobs = [[*job, f"{key}={v}"] for job in jobs for v in values]
    return jobs
