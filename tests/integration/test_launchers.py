"""The real entry points as a user runs them, on 127.0.0.1: torchrun (one and two nodes) and `a3c-train`."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from omegaconf import OmegaConf

from distributed_a3c.checkpoint import load_checkpoint
from distributed_a3c.config import Config
from distributed_a3c.models import build_model, env_spaces

if TYPE_CHECKING:
    from conftest import Finished, Jobs

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"

TRAIN_MODULE = ["-m", "distributed_a3c.train"]

# Small jobs: a few thousand env steps are ~100 pushes, enough for every worker to push and log.
SMALL = ["train.total_env_steps=4000", "train.target_return=null", "train.log_interval_s=0.25"]
QUIET = ["logger=quiet"]

EVERY_ROW_KEYS = {
    "global_step",
    "charts/SPS",
    "server/pushes_per_s",
    "server/dropped_pushes",
    "server/rejected_pushes",
    "time/wall_s",
    "time/attempt_s",
}
"""In every metrics row, whether or not a push arrived in its interval."""
DOCUMENTED_KEYS = EVERY_ROW_KEYS | {
    "charts/mean_return_100",
    "charts/episodes",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/grad_norm",
    "server/staleness_mean",
    "server/staleness_max",
    "server/pushes",
    "server/version",
}
"""In a row whose interval saw pushes after the first finished episodes."""


def wandb_dirs(tmp_path: Path) -> dict[str, str]:
    """Keep W&B's own config and cache out of the home directory and out of the job's cwd."""
    home = tmp_path / "wandb_home"
    return {f"WANDB_{kind.upper()}_DIR": str(home / kind) for kind in ("config", "cache", "data")}


def assert_clean_success(done: Finished) -> None:
    assert done.returncode == 0, done.describe()
    assert not done.leftover_pids, f"processes outlived the job: {done.leftover_pids}\n{done.describe()}"
    assert "Traceback" not in done.output, done.describe()


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_run_dir(run_dir: Path, worker_ranks: int, shards: int = 1, exit_reason: str = "total_env_steps") -> dict:
    """The files every finished run leaves, and a summary with pushes from every worker rank."""
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "summary.json"):
        assert (run_dir / name).is_file(), f"{name} missing from {sorted(os.listdir(run_dir))}"
    summary = read_summary(run_dir)
    assert summary["exit_reason"] == exit_reason, summary
    assert summary["env_steps"] >= 4000
    expected = {str(r) for r in range(shards, shards + worker_ranks)}
    assert set(summary["pushes_per_rank"]) == expected, summary
    assert all(n > 0 for n in summary["pushes_per_rank"].values()), summary
    assert summary["rejected_pushes"] == 0
    return summary


@pytest.mark.timeout(300)
def test_torchrun_standalone_run_leaves_metrics_checkpoint_wandb_and_summary(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, make_env
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    run_dir = cwd / "run"
    cmd = [venv_bin / "torchrun", "--standalone", "--nproc-per-node=3", *TRAIN_MODULE, f"hydra.run.dir={run_dir}"]
    cmd += [*SMALL, "logger.wandb.mode=offline", "logger.progress=false"]

    done = jobs.run(cmd, cwd=cwd, timeout=240, env=make_env(**wandb_dirs(tmp_path)), name="torchrun")

    assert_clean_success(done)
    assert sorted(os.listdir(cwd)) == ["run"], "a rank wrote outside the run directory"
    summary = assert_run_dir(run_dir, worker_ranks=2)

    rows = read_metrics(run_dir)
    assert rows, "metrics.jsonl is empty"
    for row in rows:
        assert row.keys() >= EVERY_ROW_KEYS, sorted(row)
    assert any(row.keys() >= DOCUMENTED_KEYS for row in rows), [sorted(r) for r in rows]
    steps = [row["global_step"] for row in rows]
    assert steps == sorted(steps) and steps[-1] == summary["env_steps"]

    state = load_checkpoint(run_dir / "checkpoint.pt")  # weights_only=True
    assert state["env_steps"] == summary["env_steps"]
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), state["config"]))
    model = build_model(cfg, *env_spaces(cfg))
    model.load_state_dict(state["model"])  # strict: every tensor present, every shape right
    assert all(torch.isfinite(p).all() for p in model.parameters())

    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, sorted(os.listdir(run_dir / "wandb"))
    assert "wandb sync" in done.stdout


@pytest.mark.timeout(150)
def test_torchrun_default_run_dir_is_created_once_by_rank_0(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [venv_bin / "torchrun", "--standalone", "--nproc-per-node=3", *TRAIN_MODULE, *QUIET, *SMALL]

    done = jobs.run(cmd, cwd=cwd, timeout=120, name="torchrun")

    assert_clean_success(done)
    assert sorted(os.listdir(cwd)) == ["outputs"], "a rank wrote outside outputs/"
    run_dirs = [t for d in (cwd / "outputs").iterdir() for t in d.iterdir()]
    assert len(run_dirs) == 1, f"expected one outputs/<date>/<time>, got {run_dirs}"
    assert_run_dir(run_dirs[0], worker_ranks=2)


@pytest.mark.timeout(150)
def test_a3c_train_local_launch(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [venv_bin / "a3c-train", "workers=2", f"hydra.run.dir={run_dir}", *QUIET, *SMALL]

    done = jobs.run(cmd, cwd=tmp_path, timeout=120, name="a3c-train")

    assert_clean_success(done)
    summary = assert_run_dir(run_dir, worker_ranks=2)
    assert OmegaConf.load(run_dir / "config.yaml").workers == 2
    assert len(read_metrics(run_dir)) >= 1
    assert f"after {summary['env_steps']} env steps" in done.stdout


@pytest.mark.timeout(240)
def test_sharded_server_learns_and_its_checkpoint_resumes_unsharded(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    """server.shards=2: ranks 0-1 each own half of the weights, ranks 2-3 work; CartPole still reaches 475."""
    run_dir = tmp_path / "run"
    cmd = [venv_bin / "a3c-train", "workers=2", "server.shards=2", f"hydra.run.dir={run_dir}", *QUIET]
    cmd += ["train.max_minutes=2", "train.log_interval_s=0.5"]

    done = jobs.run(cmd, cwd=tmp_path, timeout=180, name="a3c-train shards=2")

    assert_clean_success(done)
    assert "2 parameter-server shards + 2 workers" in done.stdout
    summary = assert_run_dir(run_dir, worker_ranks=2, shards=2, exit_reason="target_return")
    assert summary["mean_return_100"] >= 475
    shards = summary["shards"]
    assert [s["shard"] for s in shards] == [0, 1] and all(s["pushes"] > 0 and s["version"] > 0 for s in shards)
    # Every push reached both shards (the lead may have answered one more or fewer around the stop).
    assert abs(shards[0]["pushes"] - shards[1]["pushes"]) <= 2 * 2, shards

    state = load_checkpoint(run_dir / "checkpoint.pt")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), state["config"]))
    model = build_model(cfg, *env_spaces(cfg))
    model.load_state_dict(state["model"])  # both halves assembled into the unsharded format
    n = sum(p.numel() for p in model.parameters())
    assert state["optimizer"]["state"][0]["exp_avg"].shape == (n,)

    # One server continues the two shards' run (weights, Adam moments, counters) for 4000 more steps.
    resumed = tmp_path / "resumed"
    cmd = [venv_bin / "a3c-train", "workers=1", f"train.resume={run_dir / 'checkpoint.pt'}", f"hydra.run.dir={resumed}"]
    cmd += [*QUIET, "train.target_return=null", f"train.total_env_steps={summary['env_steps'] + 4000}"]
    done = jobs.run(cmd, cwd=tmp_path, timeout=120, name="a3c-train resume unsharded")
    assert_clean_success(done)
    again = read_summary(resumed)
    assert again["exit_reason"] == "total_env_steps" and again["env_steps"] >= summary["env_steps"] + 4000, again
    assert again["weight_version"] > summary["weight_version"]


@pytest.mark.timeout(200)
def test_two_torchrun_agents_on_loopback_form_one_job(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, get_free_port
) -> None:
    """Two "nodes" of 2 ranks each, c10d rendezvous on 127.0.0.1: 1 server + 3 workers across them.

    With c10d the agents' order decides the ranks (--node-rank is ignored), so rank 0 may land on either.
    """
    run_dir = tmp_path / "run"
    rdzv = [
        "--nnodes=2",
        "--nproc-per-node=2",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={LOOPBACK}:{get_free_port()}",
        f"--rdzv-id=a3c-test-{uuid.uuid4().hex[:8]}",
        f"--local-addr={LOOPBACK}",
    ]
    cmd = [venv_bin / "torchrun", *rdzv, *TRAIN_MODULE, f"hydra.run.dir={run_dir}", *QUIET, *SMALL]
    nodes = []
    for n in range(2):
        node_cwd = tmp_path / f"node{n}"
        node_cwd.mkdir()
        nodes.append(jobs.start(cmd, cwd=node_cwd, name=f"node{n}"))

    deadline = time.monotonic() + 160
    done = [node.wait(timeout=max(deadline - time.monotonic(), 1.0)) for node in nodes]

    for node in done:
        assert_clean_success(node)
    assert_run_dir(run_dir, worker_ranks=3)
    assert [os.listdir(tmp_path / f"node{n}") for n in range(2)] == [[], []], "a rank wrote into its cwd"


@pytest.mark.timeout(150)
def test_sync_mode_solves_cartpole_with_no_stale_gradient(tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    """mode=sync over RPC: one averaged step per weight version, every push answered after it."""
    run_dir = tmp_path / "run"
    cmd = [venv_bin / "a3c-train", "mode=sync", f"hydra.run.dir={run_dir}", *QUIET, "train.max_minutes=2"]

    done = jobs.run(cmd, cwd=tmp_path, timeout=120, name="a3c-train mode=sync")

    assert_clean_success(done)
    summary = assert_run_dir(run_dir, worker_ranks=2, exit_reason="target_return")
    assert summary["mean_return_100"] >= 475
    assert summary["staleness"]["max"] == 0, summary
    # Two pushes per step; at the stop a step may have had only one push of its pair answered.
    assert abs(sum(summary["pushes_per_rank"].values()) - 2 * summary["weight_version"]) <= 2, summary


@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", ["data", "central"])
def test_experience_modes_solve_cartpole(tmp_path: Path, jobs: Jobs, venv_bin: Path, mode: str) -> None:
    """mode=data and mode=central over RPC: the server learns from the workers' rollouts (central: and acts
    for them); an option of another mode is accepted and said once to be unused."""
    run_dir = tmp_path / "run"
    other_mode_option = "central.max_wait_ms=5" if mode == "data" else "server.fold=true"
    cmd = [venv_bin / "a3c-train", f"mode={mode}", other_mode_option, f"hydra.run.dir={run_dir}", *QUIET]
    cmd.append("train.max_minutes=2")

    done = jobs.run(cmd, cwd=tmp_path, timeout=120, name=f"a3c-train mode={mode}")

    assert_clean_success(done)
    key = other_mode_option.split("=")[0]
    assert done.output.count(f"warning: {key}=") == 1, done.describe()
    assert f"unused with mode={mode}" in done.output
    summary = assert_run_dir(run_dir, worker_ranks=2, exit_reason="target_return")
    assert summary["mean_return_100"] >= 475 and summary["rejected_pushes"] == 0
    assert summary["policy_lag"]["mean"] >= 0 and summary["policy_lag"]["max"] <= 100
    rows = read_metrics(run_dir)
    assert any("server/policy_lag_mean" in r and "losses/value_loss" in r for r in rows)
