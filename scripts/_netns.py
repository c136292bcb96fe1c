"""A simulated cluster for the benchmarks: K "nodes", each a network namespace of its own, joined through a
bridge in another namespace, each link optionally rate-limited with `tc ... tbf`; and processes tagged so
that everything a node started can be found and killed. Everything is removed afterwards, also on failure.

Needs root and iproute2 (`ip netns`, `tc`); `netns_missing()` says why not in one line. Addresses are
10.<x>.<y>.<node> inside the namespaces only: nothing leaves this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from _common import finished_run

REPO = Path(__file__).resolve().parent.parent

TAG = "A3C_BENCH_NODE"


def netns_missing(need_tc: bool = False) -> str | None:
    """Why namespaces (and tc, if asked) cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    for tool in ("ip", *(["tc"] if need_tc else [])):
        if shutil.which(tool) is None:
            return f"needs iproute2's `{tool}`"
    probe = f"a3cprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None if made.returncode == 0 else f"`ip netns add` is refused here: {made.stderr.strip()}"


def sh(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Node:
    netns: str
    ifname: str
    addr: str

    def run(self, cmd: list) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *[str(c) for c in cmd]]

    def set_link(self, up: bool) -> None:
        sh("ip", "-n", self.netns, "link", "set", self.ifname, "up" if up else "down")


@contextlib.contextmanager
def cluster(nodes: int, rate_mbit: float | None = None) -> Iterator[list[Node]]:
    """`nodes` namespaces on one bridge; with `rate_mbit`, each node's link is shaped to that rate both
    ways (tbf on the node's end and on the bridge's end of its veth)."""
    tag = uuid.uuid4().hex[:5]
    subnet = f"10.{100 + int(tag[:2], 16) % 100}.{int(tag[2:4], 16)}"
    hub = f"a3c{tag}hub"
    made = [hub]
    members = [Node(f"a3c{tag}n{k}", f"e{tag}{k}", f"{subnet}.{k + 1}") for k in range(nodes)]
    try:
        sh("ip", "netns", "add", hub)
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        for k, node in enumerate(members):
            sh("ip", "netns", "add", node.netns)
            made.append(node.netns)
            peer = f"p{tag}{k}"
            sh("ip", "link", "add", node.ifname, "type", "veth", "peer", "name", peer)
            sh("ip", "link", "set", node.ifname, "netns", node.netns)
            sh("ip", "link", "set", peer, "netns", hub)
            sh("ip", "-n", hub, "link", "set", peer, "master", "br0")
            sh("ip", "-n", hub, "link", "set", peer, "up")
            sh("ip", "-n", node.netns, "addr", "add", f"{node.addr}/24", "dev", node.ifname)
            sh("ip", "-n", node.netns, "link", "set", node.ifname, "up")
            sh("ip", "-n", node.netns, "link", "set", "lo", "up")
            if rate_mbit:
                burst = max(32_000, int(rate_mbit * 1e6 / 8 / 250))  # a 4 ms burst, at least 32 kB
                for ns, dev in ((node.netns, node.ifname), (hub, peer)):
                    sh(
                        "tc",
                        "-n",
                        ns,
                        "qdisc",
                        "add",
                        "dev",
                        dev,
                        "root",
                        "tbf",
                        "rate",
                        f"{rate_mbit}mbit",
                        "burst",
                        str(burst),
                        "latency",
                        "50ms",
                    )
        yield members
    finally:
        for ns in made:  # deleting a namespace removes its links and qdiscs
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def link_bytes(node: Node) -> tuple[int, int]:
    """(bytes received, bytes sent) on the node's link so far."""
    out = subprocess.run(
        ["ip", "-n", node.netns, "-j", "-s", "link", "show", node.ifname], capture_output=True, text=True, check=True
    ).stdout
    stats = json.loads(out)[0]["stats64"]
    return stats["rx"]["bytes"], stats["tx"]["bytes"]


def start(cmd: list, cwd: Path, log: Path, tag: str, env: dict | None = None) -> subprocess.Popen:
    """`cmd` in a session of its own, its output in `log`, everything it starts tagged with `tag`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", TAG: tag, **(env or {})}
    with open(log, "w") as out:
        return subprocess.Popen(
            [str(c) for c in cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def tagged(tag: str) -> list[int]:
    """Running processes (not zombies) carrying `tag`."""
    needle, pids = f"{TAG}={tag}".encode(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat[stat.rindex(")") + 2] != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def kill_tagged(tag: str) -> None:
    for pid in tagged(tag):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def multinode_job(
    nodes: list[Node],
    train: list[str],
    cwd: Path,
    env: dict,
    log_prefix: str = "",
    pause_s: float = 0.5,
    node_env: list[dict] | None = None,
) -> Iterator[tuple[list[subprocess.Popen], list[str]]]:
    """scripts/launch_multinode.sh with the Hydra overrides `train` on every node, the head first and
    `pause_s` apart, its output in `cwd/<log_prefix><netns>.log`, `node_env[k]` added to node k's `env`;
    yields each node's process and tag, and kills everything each node started on leaving."""
    tags = [uuid.uuid4().hex for _ in nodes]
    procs: list[subprocess.Popen] = []
    try:
        for k, (node, tag) in enumerate(zip(nodes, tags, strict=True)):
            cmd = node.run([REPO / "scripts" / "launch_multinode.sh", *train])
            extra = node_env[k] if node_env else {}
            procs.append(start(cmd, cwd, cwd / f"{log_prefix}{node.netns}.log", tag, {**env, **extra}))
            time.sleep(pause_s)
        yield procs, tags
    finally:
        for tag in tags:
            kill_tagged(tag)


def ranks_per_node(ranks: int, nodes: int) -> list[int]:
    """`ranks` split over `nodes` as evenly as they go, the first nodes taking the remainder."""
    if not 1 <= nodes <= ranks:
        raise ValueError(f"cannot split {ranks} ranks over {nodes} nodes")
    return [ranks // nodes + (k < ranks % nodes) for k in range(nodes)]


def run_train_on_nodes(
    train: list[str], run_dir: Path, ranks: int, nodes: int, timeout_s: float, rate_mbit: float | None = None
) -> dict:
    """One job of `ranks` ranks over `nodes` namespaces (each its own torchrun agent, under
    launch_multinode.sh, the ranks split by `ranks_per_node`), into `run_dir`; its summary, metric rows and
    launch-to-exit wall, as _common.run_train gives them. RPC runs over TCP only (`rpc.channels=[basic]`):
    the namespaces share one kernel, and TensorPipe's cma would copy tensors past the links."""
    run_dir.mkdir(parents=True, exist_ok=True)
    train = [*train, "rpc.channels=[basic]", f"hydra.run.dir={run_dir}"]
    venv = Path(sys.executable).parent.parent
    with cluster(nodes, rate_mbit) as members:
        env = {"RDZV_ENDPOINT": f"{members[0].addr}:29400", "NNODES": str(nodes), "MAX_RESTARTS": "0"}
        env |= {"RUN_ID": f"sc{uuid.uuid4().hex[:6]}", "A3C_VENV": str(venv)}
        per_node = [{"NPROC_PER_NODE": str(n)} for n in ranks_per_node(ranks, nodes)]
        t0 = time.monotonic()
        with multinode_job(members, train, run_dir, env, "node-", pause_s=0.3, node_env=per_node) as (procs, _):
            deadline = t0 + timeout_s
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.2)
            wall = time.monotonic() - t0
            codes = [p.poll() for p in procs]

    def failure() -> str:
        logs = sorted(run_dir.glob("node-*.log"))
        last = logs[0].read_text().splitlines()[-15:] if logs else []
        why = f"job on {nodes} nodes ended with codes {codes} (None: killed at the timeout)"
        return why + ":\n" + "\n".join(last)

    return finished_run(run_dir, wall, all(c == 0 for c in codes), failure)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"{what} within {timeout:g} s")
