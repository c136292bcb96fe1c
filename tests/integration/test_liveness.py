"""Slow is not dead: 32 ranks on the test machine's cores lose nobody; a worker frozen for longer than
rpc.liveness_timeout_s is lost (named, counted), and trains on when it is heard from again."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Jobs

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_thirty_two_ranks_on_a_small_machine_lose_nobody(tmp_path: Path, jobs: Jobs) -> None:
    """Every rank is slow here (31 workers and a server share the machine's cores), none is silent."""
    overrides = ["workers=31", "train.total_env_steps=400000", "train.target_return=null", "rpc.liveness_timeout_s=10"]
    done, summary = jobs.train(overrides, tmp_path / "run", timeout=220)
    assert summary["exit_reason"] == "total_env_steps" and summary["lost_workers"] == {}, summary
    assert len(summary["pushes_per_rank"]) == 31 and all(summary["pushes_per_rank"].values()), summary
    assert "lost worker rank" not in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.timeout(180)
def test_a_frozen_worker_is_lost_and_trains_on_when_it_is_back(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, ranks_of, metrics_of
) -> None:
    run_dir = tmp_path / "run"
    cmd = [venv_bin / "a3c-train", "logger=quiet", "workers=2", "rpc.liveness_timeout_s=3", "train.target_return=null"]
    cmd += ["train.total_env_steps=1000000000", "train.max_minutes=0.5", "train.log_interval_s=0.25"]
    job = jobs.start([*cmd, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    deadline = time.monotonic() + 90
    while not any(r["global_step"] > 20000 for r in metrics_of(run_dir)):
        assert time.monotonic() < deadline and job.popen.poll() is None, job.wait(1).describe()
        time.sleep(0.2)
    worker = ranks_of(job.popen.pid)[2]
    log = run_dir / "train.log"
    os.kill(worker, signal.SIGSTOP)  # silent: no thread of it answers
    try:
        frozen = time.monotonic()
        while "lost worker rank 2" not in log.read_text():
            assert time.monotonic() - frozen < 15, log.read_text()[-2000:]
            time.sleep(0.2)
        assert time.monotonic() - frozen >= 3  # not before the liveness timeout
        time.sleep(1.0)
        assert metrics_of(run_dir)[-1]["server/workers_alive"] == 1
    finally:
        os.kill(worker, signal.SIGCONT)
    while "worker rank 2 on" not in log.read_text() or "is back" not in log.read_text():
        assert time.monotonic() - frozen < 30, log.read_text()[-2000:]
        time.sleep(0.2)
    done = job.wait(timeout=120)
    assert done.returncode == 0, done.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "max_minutes" and summary["lost_workers"] == {}, summary
    assert metrics_of(run_dir)[-1]["server/workers_alive"] == 2
