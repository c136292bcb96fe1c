"""Several machines for real: two network namespaces joined by a veth pair, one torchrun agent in each;
and on loopback, what a cluster does to a job: a node that dies, one that joins late, an agent killed."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Host, Jobs

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
TRAIN = ["-m", "distributed_a3c.train", "logger=quiet", "train.target_return=null", "train.log_interval_s=0.25"]


def _torchrun_cmd(host: Host, head: Host, venv_bin: Path, args: list[str]) -> tuple[list, dict | None]:
    """The flags the issue's users needed by hand: c10d on the head's address, is_host there, --local-addr."""
    cmd = [venv_bin / "torchrun", "--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d"]
    cmd += [f"--rdzv-endpoint={head.addr}:29400", "--rdzv-id=a3c-netns", f"--local-addr={host.addr}"]
    cmd += ["--rdzv-conf=is_host=1"] if host is head else []
    return [*cmd, *TRAIN, *args], None


def _script_cmd(host: Host, head: Host, venv_bin: Path, args: list[str]) -> tuple[list, dict | None]:
    """scripts/launch_multinode.sh finds is_host and the local address by itself."""
    env = {"RDZV_ENDPOINT": f"{head.addr}:29400", "NNODES": "2", "NPROC_PER_NODE": "2", "RUN_ID": "a3c-netns"}
    env["A3C_VENV"] = str(venv_bin.parent)
    return [REPO / "scripts" / "launch_multinode.sh", *TRAIN[2:], *args], env


@pytest.mark.timeout(240)
@pytest.mark.parametrize("launch", [_torchrun_cmd, _script_cmd], ids=["torchrun", "launch_multinode.sh"])
def test_two_hosts_in_two_network_namespaces_form_one_job(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, make_env, two_hosts: tuple[Host, Host], launch
) -> None:
    """No address comes from hostname resolution (loopback here): gloo and TensorPipe use the veth."""
    run_dir = tmp_path / "run"
    head, other = two_hosts
    # [basic]: the namespaces share one kernel, so TensorPipe's cma channel would copy tensors past the veth.
    args = ["train.total_env_steps=20000", f"hydra.run.dir={run_dir}", "rpc.channels=[basic]"]
    nodes = []
    for host in (head, other):
        cmd, extra_env = launch(host, head, venv_bin, args)
        cwd = tmp_path / host.netns
        cwd.mkdir()
        nodes.append(jobs.start(host.run(cmd), cwd=cwd, env=make_env(**(extra_env or {})), name=host.netns))
        time.sleep(0.5)  # the head first: it hosts the rendezvous
    t0 = time.monotonic()
    done = [node.wait(timeout=max(200 - (time.monotonic() - t0), 1.0)) for node in nodes]

    for node in done:
        assert node.returncode == 0, node.describe()
        assert "connectFullMesh" not in node.output and "Traceback" not in node.output, node.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "total_env_steps"
    # Ranks 0-1 on one host, 2-3 on the other: every worker pushed, so both hosts trained.
    assert set(summary["pushes_per_rank"]) == {"1", "2", "3"} and all(summary["pushes_per_rank"].values()), summary
    assert summary["lost_workers"] == {}


def _agents_on_loopback(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, nnodes: str, extra: list[str], args: list[str], env=None
):
    """`start(name, is_host)` starts one torchrun agent of a job on loopback; start the host first (with
    equal addresses the lower pid gets rank 0)."""
    port = _free_port()
    rdzv = [f"--nnodes={nnodes}", "--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint={LOOPBACK}:{port}"]
    rdzv += [f"--rdzv-id=a3c-{uuid.uuid4().hex[:8]}", f"--local-addr={LOOPBACK}", *extra]

    def start(name: str, is_host: bool):
        cwd = tmp_path / name
        cwd.mkdir()
        conf = [f"--rdzv-conf=is_host={int(is_host)},last_call_timeout=1,keep_alive_interval=2"]
        return jobs.start([venv_bin / "torchrun", *rdzv, *conf, *TRAIN, *args], cwd=cwd, env=env, name=name)

    return start


def _two_training_nodes(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, metrics_of, run_dir: Path, steps: int, mode: str = "grad"
):
    """Two agents (--nnodes=2, no restarts) on loopback, once they train together: (head, other)."""
    args = [f"mode={mode}", f"train.total_env_steps={steps}", f"hydra.run.dir={run_dir}"]
    start = _agents_on_loopback(tmp_path, jobs, venv_bin, "2", [], args)
    head = start("head", is_host=True)
    time.sleep(1.0)  # the head joins first: with equal addresses the lower pid gets rank 0
    other = start("other", is_host=False)
    _wait(lambda: any(r["global_step"] > 50000 for r in metrics_of(run_dir)), 120, "no training", (head, other))
    return head, other


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, jobs_to_show=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    shown = "\n".join(j.wait(1).describe() for j in jobs_to_show)
    pytest.fail(f"{what} within {timeout} s\n{shown}")


def _kill_node(agent, ranks_of) -> list[int]:
    """kill -9 a whole node: its agent and every rank it started (they run in sessions of their own)."""
    ranks = list(ranks_of(agent.popen.pid).values())
    for pid in [agent.popen.pid, *ranks]:
        os.kill(pid, signal.SIGKILL)
    return ranks


def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in pids)


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat[stat.rindex(")") + 2]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["grad", "sync", "central"])
def test_a_dead_node_is_reported_and_the_job_finishes_with_the_workers_it_has(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, ranks_of, metrics_of, mode: str
) -> None:
    """mode=sync: the step that waited for the dead node's workers goes on without them; mode=central: the
    predictor stops waiting for their requests."""
    run_dir = tmp_path / "run"
    steps = 300000 if mode == "central" else 600000  # central's one worker left steps half as fast
    head, other = _two_training_nodes(tmp_path, jobs, venv_bin, metrics_of, run_dir, steps, mode)
    assert sorted(ranks_of(head.popen.pid)) == [0, 1], "rank 0 is not on the head node"
    dead = _kill_node(other, ranks_of)

    _wait(lambda: (run_dir / "summary.json").is_file(), 150, "the job did not finish", (head,))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "total_env_steps", summary
    assert set(summary["lost_workers"]) == {"2", "3"}, summary
    assert metrics_of(run_dir)[-1]["server/workers_alive"] == 1
    log = (run_dir / "train.log").read_text()
    assert log.count("lost worker rank 2") == 1 and log.count("lost worker rank 3") == 1, log
    if mode == "sync":
        assert summary["staleness"]["max"] == 0, summary
    # The survivors' ranks exit 0 at once; torchrun's agent then waits in its own exit barrier (up to
    # 300 s) for the dead agent, which this test does not sit out.
    head_ranks = [p for p in ranks_of(head.popen.pid).values()]
    _wait(lambda: _gone(head_ranks), 30, "the surviving ranks did not exit", (head,))
    assert _gone(dead)
    assert "Traceback" not in (tmp_path / "_logs" / "head.stderr").read_text()


@pytest.mark.timeout(300)
def test_an_elastic_job_takes_a_node_that_joins_and_goes_on_when_it_dies(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, ranks_of, metrics_of, make_env
) -> None:
    """--nnodes=1:2: the second agent's arrival restarts the job with its workers, from the checkpoint;
    its death restarts it again with the first node alone; the job finishes with exit 0.

    With torchrun's shared store a node joining a running job waits forever for the round's MASTER_ADDR
    (torch 2.13 publishes it only in a rank-0 agent's first round): elastic jobs turn the sharing off.
    """
    run_dir = tmp_path / "run"
    args = ["train.total_env_steps=1000000", "train.checkpoint_interval_s=1", f"hydra.run.dir={run_dir}"]
    env = make_env(TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    start = _agents_on_loopback(tmp_path, jobs, venv_bin, "1:2", ["--max-restarts=3"], args, env)
    head = start("head", is_host=True)
    _wait(lambda: any(r["global_step"] > 50000 for r in metrics_of(run_dir)), 120, "no training alone", (head,))
    other = start("other", is_host=False)
    _wait(lambda: len(ranks_of(other.popen.pid)) == 2, 120, "the second node never ran ranks", (head, other))
    log = run_dir / "train.log"
    _wait(lambda: "3 workers" in log.read_text(), 60, "the job never ran with 3 workers", (head, other))
    steps_before_kill = metrics_of(run_dir)[-1]["global_step"]
    _wait(lambda: metrics_of(run_dir)[-1]["global_step"] > steps_before_kill + 50000, 60, "no training with 2 nodes")
    dead = _kill_node(other, ranks_of)

    done = head.wait(timeout=200)
    assert done.returncode == 0, done.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "total_env_steps", summary
    text = log.read_text()
    assert text.count("resumed from") >= 2, text  # once for the join, once for the death
    # Each attempt's lead says how many workers it has: alone (1), with the joined node (3), alone again.
    workers = [int(n) for n in re.findall(r"parameter server: .*?, (\d+) workers?; run dir", text)]
    assert 3 in workers and workers[-1] == 1 and workers.index(3) < len(workers) - 1, (workers, text[-3000:])
    assert _gone(dead)


@pytest.mark.timeout(120)
def test_ranks_whose_agent_was_killed_exit_by_themselves_and_rank_0_saves(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, ranks_of, metrics_of
) -> None:
    """An out-of-memory killer or a scheduler's cleanup may kill torchrun's agent alone: its ranks, each in
    a session of its own, must not train on as orphans."""
    run_dir = tmp_path / "run"
    cmd = [venv_bin / "torchrun", "--standalone", "--nproc-per-node=3", *TRAIN]
    job = jobs.start([*cmd, "train.total_env_steps=100000000", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    _wait(lambda: any(r["global_step"] > 20000 for r in metrics_of(run_dir)), 90, "no training", (job,))
    ranks = list(ranks_of(job.popen.pid).values())
    assert len(ranks) == 3
    job.popen.send_signal(signal.SIGKILL)
    t0 = time.monotonic()

    _wait(lambda: _gone(ranks), 60, "orphaned ranks still running")
    assert time.monotonic() - t0 < 30
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "interrupted" and summary["env_steps"] > 20000, summary
    stderr = (tmp_path / "_logs" / "job0.stderr").read_text()
    assert "its launcher" in stderr and "is gone" in stderr, stderr


@pytest.mark.timeout(180)
def test_a_dead_parameter_server_ends_every_rank_on_every_node_with_a_line_naming_it(
    tmp_path: Path, jobs: Jobs, venv_bin: Path, ranks_of, metrics_of
) -> None:
    run_dir = tmp_path / "run"
    head, other = _two_training_nodes(tmp_path, jobs, venv_bin, metrics_of, run_dir, steps=100000000)
    other_ranks = list(ranks_of(other.popen.pid).values())
    head_ranks = ranks_of(head.popen.pid)
    assert sorted(head_ranks) == [0, 1], "rank 0 is not on the head node"
    os.kill(head_ranks[0], signal.SIGKILL)
    t0 = time.monotonic()

    done = [node.wait(timeout=60) for node in (head, other)]
    assert time.monotonic() - t0 < 60
    assert all(d.returncode != 0 for d in done), [d.describe() for d in done]
    assert _gone(other_ranks) and _gone([head_ranks[1]]), (other_ranks, head_ranks)
    # The head node's worker is ended by its own agent, which names the rank that died.
    assert "rank 0" in done[0].stderr or "local_rank: 0" in done[0].stderr, done[0].describe()
    # The other node's workers notice at once (their connection is reset) and say so in a line each.
    lines = [ln for ln in done[1].stderr.splitlines() if "lost the parameter server (rank 0 on" in ln]
    assert len(lines) == 2 and all(ln.startswith("a3c-train: error (rank ") for ln in lines), done[1].describe()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("nproc", "overrides", "pushers", "shard_ranks"),
    [
        (2, ["server.shards=2", "server.placement=spread"], {"1", "3"}, [0, 2]),
        (3, ["server.node_aggregate=true"], {"1", "3"}, [0]),
    ],
    ids=["spread shards", "node aggregators"],
)
def test_a_two_host_job_with_spread_shards_or_node_aggregators_trains_and_exits_0_on_both(
    tmp_path: Path,
    jobs: Jobs,
    venv_bin: Path,
    make_env,
    two_hosts: tuple[Host, Host],
    nproc,
    overrides,
    pushers,
    shard_ranks,
) -> None:
    """spread: shard 1 is the first rank of the second host. Aggregation with 3 ranks a host: host 1 holds
    the server, aggregator 1 and worker 2; host 2 aggregator 3 and workers 4, 5; the server sees 1 and 3."""
    run_dir = tmp_path / "run"
    head, other = two_hosts
    args = ["train.total_env_steps=30000", f"hydra.run.dir={run_dir}", "rpc.channels=[basic]", *overrides]
    nodes = []
    for host in (head, other):
        _, env = _script_cmd(host, head, venv_bin, args)
        env["NPROC_PER_NODE"] = str(nproc)
        cwd = tmp_path / host.netns
        cwd.mkdir()
        cmd = host.run([REPO / "scripts" / "launch_multinode.sh", *TRAIN[2:], *args])
        nodes.append(jobs.start(cmd, cwd=cwd, env=make_env(**env), name=host.netns))
        time.sleep(0.5)
    for node in [node.wait(timeout=200) for node in nodes]:
        assert node.returncode == 0 and "Traceback" not in node.output, node.describe()
        assert not node.leftover_pids, node.describe()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_reason"] == "total_env_steps" and summary["lost_workers"] == {}, summary
    assert set(summary["pushes_per_rank"]) == pushers and all(summary["pushes_per_rank"].values()), summary
    log = (run_dir / "train.log").read_text()
    if len(shard_ranks) > 1:
        assert f"in 2 shards (ranks {', '.join(map(str, shard_ranks))})" in log, log
    else:
        assert "node aggregators: ranks [1, 3]" in log, log
