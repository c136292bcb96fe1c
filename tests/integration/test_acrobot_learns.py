"""Acrobot-v1 learns within a CI budget: the real `a3c-train env=acrobot` job (1 server + 2 workers) in a
subprocess, stopped by its target return, with the process group killed if anything goes wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


# Measured with conf/env/acrobot.yaml on a shared 2-core machine (load 8-10): the mean return of the last
# 100 episodes passed -120 after 24.6k, 51.0k, 28.4k, 25.3k, 25.1k env steps (seeds 1-5) and -100 after
# 40.6k, 73.4k, 55.0k, 85.0k, 25.1k. The budget leaves about 3x the slowest seed to reach -120.
TARGET = -120.0
BUDGET = 150_000


@pytest.mark.timeout(170)
def test_acrobot_reaches_the_target_return_within_budget(jobs, tmp_path: Path):
    overrides = ["env=acrobot", "seed=1", f"train.target_return={TARGET}", f"train.total_env_steps={BUDGET}"]
    done, summary = jobs.train([*overrides, "train.max_minutes=2"], tmp_path / "run", timeout=150)
    assert summary["exit_reason"] == "target_return", f"{summary}\n{done.describe()}"
    assert summary["mean_return_100"] >= TARGET
    assert summary["env_steps"] <= BUDGET + 2 * 16 * 5 * 4  # a few pushes in flight when the server stops
    assert not done.leftover_pids
