"""What a cluster does to a job, measured: kill -9 of a worker, of the parameter server and of a whole node,
a job across two network namespaces, and a long soak.

    python scripts/bench_reliability.py                                  # every scenario, 10-minute soak
    python scripts/bench_reliability.py --scenarios worker,server --checkpoint-s 5
    python scripts/bench_reliability.py --scenarios soak --soak-minutes 10 --json docs/reliability_soak.json

Per kill: seconds from the kill to training again (the first metrics row of the restarted attempt that
counts more env steps than the checkpoint it resumed from), env steps lost against the checkpoint interval,
and the job's exit code. The namespace job needs root and `ip netns` (skipped otherwise, said so).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import metrics_rows, names_from

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUIET = ["logger=quiet", "train.target_return=null", "train.log_interval_s=0.25"]


def rank_pids(launcher: int) -> dict[int, int]:
    """Global rank -> pid of a launcher's ranks (torchrun: from their environment; a3c-train: fork order)."""
    kids = sorted(
        int(p) for t in Path(f"/proc/{launcher}/task").iterdir() for p in (t / "children").read_text().split()
    )
    ranks = {}
    for pid in kids:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks.update({int(v[5:]): pid for v in env if v.startswith(b"RANK=")})
    return ranks or dict(enumerate(kids))


def start(cmd: list, cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "w") as out:
        return subprocess.Popen(
            [str(c) for c in cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def wait_until(predicate, timeout: float, what: str) -> float:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError(f"{what} within {timeout} s")


def measure_kill(scenario: str, procs: list[subprocess.Popen], run_dir: Path, victims, checkpoint_s: float) -> dict:
    """Kill `victims()` late in a checkpoint interval; time the way back to training; wait for the exit."""
    wait_until(lambda: (run_dir / "checkpoint.1.pt").is_file(), 120, "no second checkpoint")
    time.sleep(0.8 * checkpoint_s)  # late in an interval: near the most a kill -9 of the server can cost
    before = metrics_rows(run_dir)
    sps = (before[-1]["global_step"] - before[0]["global_step"]) / max(
        before[-1]["time/wall_s"] - before[0]["time/wall_s"], 1e-9
    )
    pids = victims()
    t_kill = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    steps_at_kill = metrics_rows(run_dir)[-1]["global_step"]
    log = run_dir / "train.log"

    def resumed() -> int | None:
        found = re.findall(r"resumed from \S+ at (\d+) env steps", log.read_text()) if log.is_file() else []
        return int(found[-1]) if found else None

    wait_until(lambda: resumed() is not None, 180, "no resume")
    ckpt = resumed()

    def training_again() -> bool:
        r = metrics_rows(run_dir)
        drops = [i for i in range(1, len(r)) if r[i]["time/attempt_s"] < r[i - 1]["time/attempt_s"]]
        return bool(drops) and any(x["global_step"] > ckpt for x in r[drops[-1] :])

    t_again = wait_until(training_again, 180, "no training after the restart")
    codes = [p.wait(timeout=600) for p in procs]
    lost = max(steps_at_kill - ckpt, 0)
    return {
        "scenario": scenario,
        "kill_to_training_s": round(t_again - t_kill, 2),
        "env_steps_lost": lost,
        "lost_as_seconds_of_training": round(lost / max(sps, 1e-9), 2),
        "checkpoint_interval_s": checkpoint_s,
        "exit_codes": codes,
        "summary_exit_reason": json.loads((run_dir / "summary.json").read_text())["exit_reason"],
    }


def scenario_local_kill(which: str, tmp: Path, args: argparse.Namespace) -> dict:
    run_dir = tmp / f"kill-{which}"
    cmd = [BIN / "a3c-train", "train.max_restarts=3", f"train.total_env_steps={args.steps}", *QUIET]
    cmd += [f"train.checkpoint_interval_s={args.checkpoint_s}", f"hydra.run.dir={run_dir}"]
    proc = start(cmd, tmp, tmp / f"kill-{which}.log")
    rank = 0 if which == "server" else 2
    result = measure_kill(
        f"kill -9 the {which} (a3c-train train.max_restarts=3)",
        [proc],
        run_dir,
        lambda: [rank_pids(proc.pid)[rank]],
        args.checkpoint_s,
    )
    return result


def scenario_node(tmp: Path, args: argparse.Namespace) -> dict:
    """Two agents on loopback, --nnodes=1:2: kill -9 the one that hosts neither rank 0 nor the store."""
    run_dir = tmp / "kill-node"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rdzv = ["--nnodes=1:2", "--nproc-per-node=2", "--max-restarts=3", "--rdzv-backend=c10d"]
    rdzv += [f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=rel-{uuid.uuid4().hex[:6]}", "--local-addr=127.0.0.1"]
    train = ["-m", "distributed_a3c.train", *QUIET, f"train.total_env_steps={args.steps}"]
    train += [f"train.checkpoint_interval_s={args.checkpoint_s}", f"hydra.run.dir={run_dir}"]
    env = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    procs = []
    for n, is_host in ((0, 1), (1, 0)):
        conf = [f"--rdzv-conf=is_host={is_host},last_call_timeout=2,keep_alive_interval=2"]
        procs.append(start([BIN / "torchrun", *rdzv, *conf, *train], tmp, tmp / f"node{n}.log", env))
        time.sleep(1.0)
    wait_until(
        lambda: "3 workers" in ((run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else ""),
        120,
        "the two nodes never trained together",
    )
    for f in (run_dir / "checkpoint.1.pt",):  # checkpoints of the two-node attempt
        f.unlink(missing_ok=True)

    def node1() -> list[int]:
        return [procs[1].pid, *rank_pids(procs[1].pid).values()]

    result = measure_kill(
        "kill -9 a whole node (agent + 2 ranks; torchrun --nnodes=1:2 --max-restarts=3)",
        [procs[0]],
        run_dir,
        node1,
        args.checkpoint_s,
    )
    procs[1].wait(timeout=10)
    return result


def scenario_netns(tmp: Path, args: argparse.Namespace) -> dict:
    """Two hosts in two network namespaces, launch_multinode.sh on each: time to the first push."""
    if os.geteuid() != 0:
        return {"scenario": "two network namespaces", "skipped": "needs root for ip netns"}
    tag = uuid.uuid4().hex[:6]
    ns, veth, addrs = (f"rel{tag}a", f"rel{tag}b"), (f"ra{tag}", f"rb{tag}"), ("10.231.7.1", "10.231.7.2")
    run_dir = tmp / "netns"
    ip = lambda *a: subprocess.run(["ip", *a], check=True, capture_output=True)  # noqa: E731
    try:
        for n in ns:
            ip("netns", "add", n)
        ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for n, v, a in zip(ns, veth, addrs, strict=True):
            ip("link", "set", v, "netns", n)
            ip("-n", n, "addr", "add", f"{a}/24", "dev", v)
            ip("-n", n, "link", "set", v, "up")
            ip("-n", n, "link", "set", "lo", "up")
        env = {"RDZV_ENDPOINT": f"{addrs[0]}:29400", "NNODES": "2", "NPROC_PER_NODE": "2", "RUN_ID": "rel"}
        env["A3C_VENV"] = str(BIN.parent)
        t0 = time.monotonic()
        procs = []
        for n in ns:
            cmd = [
                "ip",
                "netns",
                "exec",
                n,
                REPO / "scripts" / "launch_multinode.sh",
                *QUIET,
                "train.total_env_steps=200000",
                f"hydra.run.dir={run_dir}",
            ]
            procs.append(start(cmd, tmp, tmp / f"{n}.log", env))
        t_push = wait_until(lambda: any(r["global_step"] > 0 for r in metrics_rows(run_dir)), 120, "no push")
        codes = [p.wait(timeout=300) for p in procs]
        summary = json.loads((run_dir / "summary.json").read_text())
        return {
            "scenario": "two network namespaces (launch_multinode.sh, 1 server + 3 workers)",
            "launch_to_first_push_s": round(t_push - t0, 2),
            "launch_to_exit_s": round(time.monotonic() - t0, 2),
            "exit_codes": codes,
            "workers_pushed": sorted(summary["pushes_per_rank"]),
        }
    finally:
        for n in ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scenario_soak(tmp: Path, args: argparse.Namespace) -> dict:
    run_dir = tmp / "soak"
    cmd = [
        BIN / "a3c-train",
        "workers=4",
        "train.total_env_steps=100000000000",
        f"train.max_minutes={args.soak_minutes}",
    ]
    cmd += [*QUIET, f"hydra.run.dir={run_dir}"]
    proc = start(cmd, tmp, tmp / "soak.log")
    wait_until(lambda: len(metrics_rows(run_dir)) > 4, 120, "the soak never trained")
    time.sleep(60)  # past start-up: allocator pools and caches have grown to their working size
    pids = rank_pids(proc.pid)
    first = {r: rss_mb(p) for r, p in pids.items()}
    last = dict(first)
    while proc.poll() is None:
        for r, p in pids.items():
            with contextlib.suppress(OSError):
                last[r] = rss_mb(p)
        time.sleep(5)
    summary = json.loads((run_dir / "summary.json").read_text())
    output = (tmp / "soak.log").read_text()
    return {
        "scenario": f"soak: 1 server + 4 workers, {args.soak_minutes} min",
        "exit_code": proc.returncode,
        "env_steps": summary["env_steps"],
        "dropped_pushes": summary["dropped_pushes"],
        "rejected_pushes": summary["rejected_pushes"],
        "lost_workers": summary["lost_workers"],
        "error_lines": [ln for ln in output.splitlines() if "error" in ln.lower() or "Traceback" in ln],
        "rss_mb_after_1_min": {str(r): round(v, 1) for r, v in first.items()},
        "rss_mb_at_end": {str(r): round(v, 1) for r, v in last.items()},
        "rss_growth_pct": {str(r): round(100 * (last[r] / first[r] - 1), 2) for r in first},
    }


SCENARIOS = {
    "worker": lambda tmp, a: scenario_local_kill("worker", tmp, a),
    "server": lambda tmp, a: scenario_local_kill("server", tmp, a),
    "node": scenario_node,
    "netns": scenario_netns,
    "soak": scenario_soak,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--checkpoint-s", type=float, default=5.0, help="train.checkpoint_interval_s of the kill runs")
    parser.add_argument("--steps", type=int, default=4_000_000, help="train.total_env_steps of the kill runs")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    names = names_from(parser, "--scenarios", args.scenarios, SCENARIOS)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="a3c-reliability-") as tmp:
        for name in names:
            result = SCENARIOS[name](Path(tmp), args)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
