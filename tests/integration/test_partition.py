"""No process left waiting: a network partition between two hosts, and a dead node of a fixed-size job.

The launch script runs torchrun's agent under the supervisor (distributed/supervise.py): once its node's
ranks are over, an agent that still waits for nodes that are gone is stopped, and the node exits with
what its ranks said.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Host, Jobs

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 60


@pytest.mark.timeout(300)
def test_a_partition_ends_both_nodes_and_the_cut_off_one_says_why(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, make_env, two_hosts: tuple[Host, Host], link, metrics_of
) -> None:
    """Links down after the first checkpoint: the cut-off node's workers give up on the silent server within
    the liveness timeout, its agent is stopped, and it exits non-zero with one line; the head trains on
    with its own worker to the end of the run and exits 0. Nothing of either node is left."""
    head, other = two_hosts
    run_dir = tmp_path / "run"
    args = ["logger=quiet", "train.target_return=null", "train.total_env_steps=1000000000", "train.max_minutes=0.5"]
    args += ["train.checkpoint_interval_s=2", "train.log_interval_s=0.25", f"hydra.run.dir={run_dir}"]
    nodes = []
    for host in (head, other):
        env = {"RDZV_ENDPOINT": f"{head.addr}:29400", "NNODES": "2", "NPROC_PER_NODE": "2", "MAX_RESTARTS": "0"}
        env |= {"RUN_ID": "a3c-part", "A3C_VENV": str(venv_bin.parent), "A3C_AGENT_GRACE_S": "5"}
        cwd = tmp_path / host.netns
        cwd.mkdir()
        cmd = host.run([REPO / "scripts" / "launch_multinode.sh", *args])
        nodes.append(jobs.start(cmd, cwd=cwd, env=make_env(**env), name=host.netns))
        time.sleep(0.5)
    deadline = time.monotonic() + 120
    while not ((run_dir / "checkpoint.pt").is_file() and any(r["global_step"] > 0 for r in metrics_of(run_dir))):
        assert time.monotonic() < deadline, [n.wait(1).describe() for n in nodes]
        time.sleep(0.2)
    for host in (head, other):
        link(host, up=False)
    cut = time.monotonic()

    cut_off = nodes[1].wait(timeout=GONE_WITHIN_S + 10)
    assert time.monotonic() - cut < GONE_WITHIN_S, cut_off.describe()
    assert cut_off.returncode != 0, cut_off.describe()
    lines = [ln for ln in cut_off.stderr.splitlines() if ln.startswith("a3c-train: error (rank ")]
    assert len(lines) == 2 and all("lost the parameter server" in ln for ln in lines), cut_off.describe()
    said = [ln for ln in cut_off.stderr.splitlines() if ln.startswith("a3c-supervise: node")]
    assert len(said) == 1 and "exit 1: rank 2 exited with code 1: lost the parameter server" in said[0], said
    assert "Traceback" not in cut_off.stderr, cut_off.describe()
    assert not cut_off.leftover_pids, cut_off.describe()

    survivor = nodes[0].wait(timeout=150)
    assert survivor.returncode == 0, survivor.describe()
    assert not survivor.leftover_pids, survivor.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "max_minutes" and set(summary["lost_workers"]) == {"2", "3"}, summary
    # The head's agent was stopped within the supervisor's grace after its ranks wrote the summary.
    ended = (tmp_path / "_logs" / f"{head.netns}.stderr").stat().st_mtime
    assert ended - (run_dir / "summary.json").stat().st_mtime < GONE_WITHIN_S


@pytest.mark.timeout(240)
def test_a_dead_node_of_a_fixed_size_job_leaves_the_survivor_to_exit_0_at_once(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, get_free_port, ranks_of, metrics_of, make_env
) -> None:
    """--nnodes=2, no restarts: the survivor finishes the run; its agent would wait 300 s in torchrun's exit
    barrier for the dead one, the supervisor stops it instead (after A3C_AGENT_GRACE_S, 5 s here), and the
    node exits 0."""
    run_dir = tmp_path / "run"
    port = get_free_port()
    rdzv = ["--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"]
    rdzv += [f"--rdzv-id=dead{uuid.uuid4().hex[:6]}", "--local-addr=127.0.0.1"]
    train = ["-m", "distributed_a3c.train", "logger=quiet", "train.target_return=null", "train.log_interval_s=0.25"]
    train += ["train.total_env_steps=500000", f"hydra.run.dir={run_dir}"]
    supervise = [venv_bin / "python", "-m", "distributed_a3c.distributed.supervise", "--"]

    def start(name: str, is_host: bool):
        cwd = tmp_path / name
        cwd.mkdir()
        conf = f"--rdzv-conf=is_host={int(is_host)},last_call_timeout=1,keep_alive_interval=2"
        cmd = [*supervise, venv_bin / "torchrun", *rdzv, conf, *train]
        return jobs.start(cmd, cwd=cwd, name=name, env=make_env(A3C_AGENT_GRACE_S="5"))

    head = start("head", True)
    time.sleep(1.0)
    other = start("other", False)
    deadline = time.monotonic() + 120
    while not any(r["global_step"] > 30000 for r in metrics_of(run_dir)):
        assert time.monotonic() < deadline, [j.wait(1).describe() for j in (head, other)]
        time.sleep(0.2)
    agent = next(int(p) for p in Path(f"/proc/{other.popen.pid}/task/{other.popen.pid}/children").read_text().split())
    for pid in [other.popen.pid, agent, *ranks_of(agent).values()]:
        os.kill(pid, signal.SIGKILL)

    done = head.wait(timeout=200)
    assert done.returncode == 0, done.describe()
    assert not done.leftover_pids, done.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "total_env_steps" and set(summary["lost_workers"]) == {"2", "3"}, summary
    assert time.time() - (run_dir / "summary.json").stat().st_mtime < GONE_WITHIN_S
    assert "stopped it; exit 0" in done.stderr, done.describe()
