"""Restarts that resume: a rank killed mid-run, the job restarted by torchrun (or `train.max_restarts`),
training continued from the run directory's checkpoint, and the job finishing with exit 0."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Finished, Job, Jobs

pytestmark = pytest.mark.integration

CHECKPOINT_INTERVAL_S = 1.0
BUDGET = [
    "logger=quiet",
    "train.total_env_steps=400000",
    "train.target_return=null",
    "train.log_interval_s=0.25",
    f"train.checkpoint_interval_s={CHECKPOINT_INTERVAL_S}",
]


def wait_for_training(job: Job, run_dir: Path, ranks_of: Callable, metrics_of: Callable, ranks: int) -> dict[int, int]:
    """Wait until training is well under way (50k env steps logged, a checkpoint written); return the
    ranks' pids."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if (run_dir / "checkpoint.pt").is_file() and any(r["global_step"] > 50000 for r in metrics_of(run_dir)):
            pids = ranks_of(job.popen.pid)
            if len(pids) == ranks:
                return pids
        assert job.popen.poll() is None, job.wait(1).describe()
        time.sleep(0.1)
    pytest.fail(f"no training within 90 s:\n{job.wait(1).describe()}")


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has the file `path` open."""
    fds = Path(f"/proc/{pid}/fd")
    return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir())


def assert_finished_after_resuming(done: Finished, run_dir: Path, metrics_of: Callable) -> None:
    """Exit 0 at the step budget; the restart resumed from a checkpoint at most one checkpoint interval
    (and a log interval) older than the last row logged before the kill, and logged on from there."""
    assert done.returncode == 0, done.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "total_env_steps" and summary["env_steps"] >= 400000, summary
    log_text = (run_dir / "train.log").read_text()
    resumed = [int(n) for n in re.findall(r"resumed from \S+ at (\d+) env steps", log_text)]
    assert resumed, f"the restart did not resume:\n{log_text[-3000:]}"
    rows = metrics_of(run_dir)
    restart = next(i for i in range(1, len(rows)) if rows[i]["time/attempt_s"] < rows[i - 1]["time/attempt_s"])
    before, after = rows[:restart], rows[restart:]
    assert after[0]["global_step"] >= resumed[0] > 0
    assert all(a["global_step"] <= b["global_step"] for a, b in zip(after, after[1:], strict=False))
    newest_possible_loss = before[-1]["time/wall_s"] - CHECKPOINT_INTERVAL_S - 0.5
    floor = max((r["global_step"] for r in before if r["time/wall_s"] <= newest_possible_loss), default=0)
    assert resumed[0] >= floor, f"resumed at {resumed[0]} env steps, but {floor} were logged before the last checkpoint"
    # The clock went on from the checkpoint's training time (at least the newest possible loss point); the
    # attempt's own clock started again.
    trained_before = after[0]["time/wall_s"] - after[0]["time/attempt_s"]
    assert trained_before > 0 and trained_before >= newest_possible_loss - 0.1, (before[-1], after[0])
    assert "Gloo connectFullMesh failed" not in done.output


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["grad", "central"])
def test_torchrun_restarts_a_killed_worker_and_resumes(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, ranks_of, metrics_of, make_env, mode: str
) -> None:
    """mode=central: the predictor no longer waits for the killed worker; the restart resumes as in grad."""
    run_dir = tmp_path / "run"
    cmd = [venv_bin / "torchrun", "--standalone", "--nproc-per-node=3", "--max-restarts=2"]
    cmd += ["-m", "distributed_a3c.train", f"mode={mode}", *BUDGET, "logger.wandb.mode=offline"]
    cmd.append(f"hydra.run.dir={run_dir}")
    wandb_home = {f"WANDB_{kind}_DIR": str(tmp_path / "wandb_home" / kind) for kind in ("CONFIG", "CACHE", "DATA")}
    job = jobs.start(cmd, cwd=tmp_path, env=make_env(**wandb_home), name="torchrun")
    pids = wait_for_training(job, run_dir, ranks_of, metrics_of, ranks=3)
    os.kill(pids[2], signal.SIGKILL)

    assert_finished_after_resuming(job.wait(timeout=200), run_dir, metrics_of)
    # Both attempts logged to one W&B run: the restart resumed the first attempt's run id.
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(p.name.endswith(f"-{run_id}") for p in offline_runs), offline_runs


@pytest.mark.timeout(240)
def test_a3c_train_max_restarts_restarts_a_killed_parameter_server_and_resumes(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, ranks_of, metrics_of
) -> None:
    run_dir = tmp_path / "run"
    cmd = [venv_bin / "a3c-train", "train.max_restarts=2", *BUDGET, f"hydra.run.dir={run_dir}"]
    job = jobs.start(cmd, cwd=tmp_path, name="a3c-train")
    pids = wait_for_training(job, run_dir, ranks_of, metrics_of, ranks=3)
    # Forked ranks do not show RANK in /proc: make sure the process about to die is the server, the one
    # rank that holds the run's metrics.jsonl open.
    assert holds_open(pids[0], run_dir / "metrics.jsonl"), f"pid {pids[0]} is not rank 0: {pids}"
    os.kill(pids[0], signal.SIGKILL)  # no final checkpoint: the periodic one is what survives

    done = job.wait(timeout=200)
    assert_finished_after_resuming(done, run_dir, metrics_of)
    assert not done.leftover_pids, done.describe()
