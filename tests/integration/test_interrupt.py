"""Stopping a job from outside: Ctrl-C in a terminal and a scheduler's SIGTERM both keep a checkpoint.

What a user expects of a long run: it stops within seconds, rank 0 writes its checkpoint and summary, no
rank is left behind, and the checkpoint resumes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from distributed_a3c.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from conftest import Finished, Job, Jobs

pytestmark = pytest.mark.integration

ENDLESS = ["train.total_env_steps=1000000000", "train.target_return=null", "train.log_interval_s=0.25"]


def _start_training(jobs: Jobs, venv_bin: Path, run_dir: Path, cwd: Path) -> Job:
    job = jobs.start([venv_bin / "a3c-train", "logger=quiet", *ENDLESS, f"hydra.run.dir={run_dir}"], cwd=cwd)
    deadline = time.monotonic() + 90
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:  # training is under way once a row has counted env steps
        if metrics.is_file() and any(json.loads(x).get("global_step", 0) > 0 for x in metrics.read_text().splitlines()):
            return job
        assert job.popen.poll() is None, job.wait(1).describe()
        time.sleep(0.2)
    pytest.fail(f"no metrics row with env steps after 90 s:\n{job.wait(1).describe()}")


def _assert_stopped_with_checkpoint(job: Job, signum: int, says: str, run_dir: Path) -> Finished:
    """Within seconds every process is gone, the exit is 128 + `signum`, stderr `says` why in a line of
    its own making (no traceback), and rank 0 left the summary and a checkpoint that agree."""
    done = job.wait(timeout=30)
    assert done.returncode == 128 + signum, done.describe()  # a calling script must not go on
    assert not done.leftover_pids, done.describe()
    assert "Traceback" not in done.output, done.describe()
    assert says in done.stderr, done.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "interrupted", summary
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["env_steps"] == summary["env_steps"] > 0
    assert state["optimizer"]["state"][0]["exp_avg"].numel() > 0
    return done


@pytest.mark.timeout(180)
def test_ctrl_c_stops_every_rank_and_keeps_the_checkpoint(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    run_dir = tmp_path / "run"
    job = _start_training(jobs, venv_bin, run_dir, tmp_path)
    os.killpg(job.pgid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground process group
    says = "a3c-train: interrupted; rank 0 wrote its checkpoint and summary"
    done = _assert_stopped_with_checkpoint(job, signal.SIGINT, says, run_dir)
    assert "done: interrupted" in done.stdout, done.describe()


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("signum", "says"),
    [
        (signal.SIGTERM, "a3c-train: stopped by SIGTERM; rank 0 wrote its checkpoint and summary"),
        (signal.SIGINT, "a3c-train: interrupted; rank 0 wrote its checkpoint and summary"),
    ],
    ids=["sigterm", "sigint"],
)
def test_a_signal_to_the_launcher_alone_stops_every_rank_and_keeps_the_checkpoint(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, signum: int, says: str
) -> None:
    """A scheduler, `kill` or a wrapper script passing on its Ctrl-C signals only the launcher; it passes
    the stop on to its ranks."""
    run_dir = tmp_path / "run"
    job = _start_training(jobs, venv_bin, run_dir, tmp_path)
    job.popen.send_signal(signum)
    _assert_stopped_with_checkpoint(job, signum, says, run_dir)


def _rank_pids(launcher_pid: int) -> list[int]:
    """Pids of the ranks the local launcher forked, in rank order (it forks them one after another)."""
    children = []
    for task in Path(f"/proc/{launcher_pid}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    return sorted(children)


@pytest.mark.timeout(180)
def test_a_killed_worker_ends_the_job_with_a_line_naming_it_and_keeps_the_checkpoint(
    tmp_path: Path, jobs: Jobs, venv_bin: Path
) -> None:
    """A worker lost to SIGKILL (e.g. the OOM killer): the job ends at once, rank 0 still saves."""
    run_dir = tmp_path / "run"
    job = _start_training(jobs, venv_bin, run_dir, tmp_path)
    ranks = _rank_pids(job.popen.pid)
    assert len(ranks) == 3, ranks
    os.kill(ranks[2], signal.SIGKILL)
    _assert_stopped_with_checkpoint(job, signal.SIGKILL, "a3c-train: error: rank 2 was killed by SIGKILL", run_dir)


@pytest.mark.timeout(240)
def test_the_same_command_continues_an_interrupted_run_from_its_checkpoint(
    tmp_path: Path, jobs: Jobs, venv_bin: Path
) -> None:
    """What LAUNCHING.md promises: Ctrl-C, then the same command again, and the run goes on where it
    stopped (weights, counters, clock) and finishes."""
    run_dir = tmp_path / "run"
    budget = ["train.total_env_steps=600000", "train.target_return=null", "train.log_interval_s=0.25"]
    cmd = [venv_bin / "a3c-train", "logger=quiet", *budget, f"hydra.run.dir={run_dir}"]
    first = jobs.start(cmd, cwd=tmp_path, name="first")
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while not (metrics.is_file() and any(json.loads(x)["global_step"] > 0 for x in metrics.read_text().splitlines())):
        assert time.monotonic() < deadline and first.popen.poll() is None, first.wait(1).describe()
        time.sleep(0.1)
    os.killpg(first.pgid, signal.SIGINT)
    assert first.wait(timeout=30).returncode == 128 + signal.SIGINT
    interrupted = json.loads((run_dir / "summary.json").read_text())
    assert interrupted["exit_reason"] == "interrupted" and 0 < interrupted["env_steps"] < 600000, interrupted
    rows_before = len(metrics.read_text().splitlines())

    again = jobs.run(cmd, cwd=tmp_path, timeout=120, name="again")
    assert again.returncode == 0, again.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "total_env_steps" and summary["env_steps"] >= 600000, summary
    log = (run_dir / "train.log").read_text()
    assert f"resumed from {run_dir / 'checkpoint.pt'} at {interrupted['env_steps']} env steps" in log, log[-2000:]
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    continued = rows[rows_before:]
    assert continued and continued[0]["global_step"] >= interrupted["env_steps"], continued[:2]
    # The clock goes on from the interrupted attempt's training time, and the weights from its version.
    assert continued[0]["time/wall_s"] - continued[0]["time/attempt_s"] >= interrupted["wall_time_s"] - 0.5
    assert summary["weight_version"] > interrupted["weight_version"]
