"""Hydra's multirun, as researchers use it: every job of a sweep runs, failures are reported, Ctrl-C stops
the sweep, and Optuna's sweeper tunes on the objective a job returns."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from conftest import Jobs

pytestmark = pytest.mark.integration
SMALL = ["logger=quiet", "train.target_return=null", "train.total_env_steps=20000"]


@pytest.mark.timeout(180)
def test_a_multirun_runs_every_job_and_ties_them_together(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    cmd = [venv_bin / "a3c-train", "-m", "seed=1,2", *SMALL, f"hydra.sweep.dir={sweep_dir}"]
    done = jobs.run(cmd, cwd=tmp_path, timeout=150)
    assert done.returncode == 0, done.describe()
    for job, seed in ((0, 1), (1, 2)):
        summary = json.loads((sweep_dir / str(job) / "summary.json").read_text())
        assert summary["exit_reason"] == "total_env_steps" and summary["env_steps"] >= 20000, summary
        config = yaml.safe_load((sweep_dir / str(job) / "config.yaml").read_text())
        assert config["seed"] == seed
        assert config["logger"]["wandb"]["group"] == str(sweep_dir).strip("/").replace("/", "-")
        assert f"seed={seed}" in config["name"] and f"seed={seed}" in config["logger"]["wandb"]["tags"]
    assert not done.leftover_pids


@pytest.mark.timeout(180)
def test_failed_jobs_are_named_one_line_each_and_fail_the_sweep(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    missing = tmp_path / "missing.pt"  # every job fails to resume from it, after the sweep has started
    cmd = [venv_bin / "a3c-train", "-m", "seed=1,2", *SMALL, f"train.resume={missing}", f"hydra.sweep.dir={sweep_dir}"]
    done = jobs.run(cmd, cwd=tmp_path, timeout=150)
    assert done.returncode == 1, done.describe()
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("a3c-train: error: job #")]
    assert len(lines) == 2 and "seed=1" in lines[0] and "seed=2" in lines[1], done.describe()
    assert "a3c-train: error: 2 job(s) of the sweep failed" in done.stderr


@pytest.mark.timeout(180)
def test_ctrl_c_stops_the_current_job_cleanly_and_no_other_starts(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    endless = ["logger=quiet", "train.target_return=null", "train.total_env_steps=1000000000"]
    job = jobs.start([venv_bin / "a3c-train", "-m", "seed=1,2", *endless, f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    metrics = sweep_dir / "0" / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert time.monotonic() < deadline and job.popen.poll() is None, job.wait(1).describe()
        time.sleep(0.2)
    os.killpg(job.pgid, signal.SIGINT)
    done = job.wait(timeout=60)
    assert done.returncode == 130, done.describe()
    assert json.loads((sweep_dir / "0" / "summary.json").read_text())["exit_reason"] == "interrupted"
    assert not (sweep_dir / "1").exists(), "the sweep started the next job after Ctrl-C"


@pytest.mark.timeout(300)
def test_optuna_tunes_on_the_objective_the_jobs_return(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")  # a guard only: test.sh installs the sweep extra
    sweep_dir = tmp_path / "sweep"
    cmd = [venv_bin / "a3c-train", "-m", "+hparams_search=cartpole_optuna", "hydra.sweeper.n_trials=3"]
    cmd += ["train.objective=mean_return_100", "hydra.sweeper.direction=maximize", "logger=quiet"]
    cmd += ["train.total_env_steps=30000", "train.target_return=null", f"hydra.sweep.dir={sweep_dir}"]
    done = jobs.run(cmd, cwd=tmp_path, timeout=270)
    assert done.returncode == 0, done.describe()
    values = []
    for trial in range(3):
        summary = json.loads((sweep_dir / str(trial) / "summary.json").read_text())
        assert summary["objective"]["name"] == "mean_return_100"
        values.append(summary["objective"]["value"])
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values)), (best, values)
    trial = values.index(max(values))
    config = yaml.safe_load((sweep_dir / str(trial) / "config.yaml").read_text())
    assert config["optim"]["lr"] == pytest.approx(best["best_params"]["optim.lr"])


@pytest.mark.timeout(60)
def test_bad_sweep_input_is_one_line(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    for bad, says in (
        (["seed=1,2", "optim.lrr=1e-3"], "unknown config key 'optim.lrr'"),
        (["seed=1,2", "train.objective=reward"], "train.objective='reward' is invalid: must be one of"),
    ):
        done = jobs.run([venv_bin / "a3c-train", "-m", *bad], cwd=tmp_path, timeout=50)
        errors = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 2 and len(errors) == 1 and says in errors[0], done.describe()
        assert not (tmp_path / "multirun").exists()
