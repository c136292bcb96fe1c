"""No process left waiting, measured: a network partition between two nodes, and a dead node of a job of a
fixed size; seconds from the cut or the kill to every process of each node gone, and the exit codes.

    python scripts/bench_partition.py                     # both scenarios (the partition needs root)
    python scripts/bench_partition.py --scenarios deadnode --json out.json

partition   two network namespaces on a bridge, scripts/launch_multinode.sh in each (1 server + 3 workers);
            after the first checkpoint the cut-off node's link goes down (no FIN, no RST: packets stop).
deadnode    two torchrun agents on loopback under the supervisor, --nnodes=2, no restarts: the node without
            rank 0 is killed (its supervisor, agent and ranks); the survivor finishes the run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import metrics_rows, names_from
from _netns import cluster, kill_tagged, multinode_job, netns_missing, start, tagged, wait_until

BIN = Path(sys.executable).parent
QUIET = ["logger=quiet", "train.target_return=null", "train.log_interval_s=0.25"]


def gone_at(tag: str, proc, timeout: float) -> float:
    """When every process of a node (its launcher and all it started) had exited."""
    return wait_until(lambda: proc.poll() is not None and not tagged(tag), timeout, "the node's processes ended")


def last_line(log: Path, prefix: str) -> str | None:
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith(prefix)]
    return lines[-1] if lines else None


def scenario_partition(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    missing = netns_missing()
    if missing:
        return {"scenario": "partition", "skipped": missing}
    run_dir = tmp / "partition"
    with cluster(2) as nodes:
        head, cut_off = nodes
        env = {"RDZV_ENDPOINT": f"{head.addr}:29400", "NNODES": "2", "NPROC_PER_NODE": "2", "MAX_RESTARTS": "0"}
        env |= {"RUN_ID": "partition", "A3C_VENV": str(BIN.parent)}
        train = [*QUIET, "train.total_env_steps=100000000000", f"train.max_minutes={args.minutes}"]
        train += ["train.checkpoint_interval_s=2", f"hydra.run.dir={run_dir}"]
        with multinode_job(nodes, train, tmp, env) as (procs, tags):
            wait_until(
                lambda: (run_dir / "checkpoint.pt").is_file() and any(r["global_step"] for r in metrics_rows(run_dir)),
                120,
                "no checkpoint",
            )
            for node in nodes:
                node.set_link(up=False)
            cut = time.monotonic()
            cut_off_gone = gone_at(tags[1], procs[1], 300)
            head_gone = gone_at(tags[0], procs[0], 60 * args.minutes + 300)
            summary_at = (run_dir / "summary.json").stat().st_mtime
            summary = json.loads((run_dir / "summary.json").read_text())
            return {
                "scenario": "partition: both ends of the link down after the first checkpoint",
                "cut_off_node": {
                    "exit_code": procs[1].returncode,
                    "cut_to_all_gone_s": round(cut_off_gone - cut, 1),
                    "line": last_line(tmp / f"{cut_off.netns}.log", "a3c-supervise:"),
                },
                "head_node": {
                    "exit_code": procs[0].returncode,
                    "run_end_to_all_gone_s": round(time.time() - summary_at - (time.monotonic() - head_gone), 1),
                    "trained_on_to": summary["exit_reason"],
                    "lost_workers": sorted(summary["lost_workers"]),
                },
            }


def scenario_deadnode(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = tmp / "deadnode"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rdzv = ["--nnodes=2", "--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}"]
    rdzv += [f"--rdzv-id=dead-{uuid.uuid4().hex[:6]}", "--local-addr=127.0.0.1"]
    train = ["-m", "distributed_a3c.train", *QUIET, f"train.total_env_steps={args.steps}", f"hydra.run.dir={run_dir}"]
    tags = [uuid.uuid4().hex for _ in range(2)]
    procs = []
    try:
        for n, tag in enumerate(tags):
            conf = f"--rdzv-conf=is_host={int(n == 0)},last_call_timeout=1,keep_alive_interval=2"
            cmd = [
                BIN / "python",
                "-m",
                "distributed_a3c.distributed.supervise",
                "--",
                BIN / "torchrun",
                *rdzv,
                conf,
                *train,
            ]
            procs.append(start(cmd, tmp, tmp / f"dead{n}.log", tag))
            time.sleep(1.0)
        wait_until(lambda: any(r["global_step"] > 30000 for r in metrics_rows(run_dir)), 120, "no training")
        for pid in tagged(tags[1]):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: (run_dir / "summary.json").is_file(), 600, "no summary")
        ranks_done = time.monotonic()
        head_gone = gone_at(tags[0], procs[0], 300)
        summary = json.loads((run_dir / "summary.json").read_text())
        return {
            "scenario": "dead node: kill -9 of the node without rank 0, --nnodes=2, no restarts",
            "kill_to_run_end_s": round(ranks_done - killed, 1),
            "run_end_to_all_gone_s": round(head_gone - ranks_done, 1),
            "survivor_exit_code": procs[0].returncode,
            "survivor_line": last_line(tmp / "dead0.log", "a3c-supervise:"),
            "exit_reason": summary["exit_reason"],
            "lost_workers": sorted(summary["lost_workers"]),
        }
    finally:
        for tag in tags:
            kill_tagged(tag)


SCENARIOS = {"partition": scenario_partition, "deadnode": scenario_deadnode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--minutes", type=float, default=1.0, help="train.max_minutes of the partition run")
    parser.add_argument("--steps", type=int, default=1_000_000, help="train.total_env_steps of the dead-node run")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    names = names_from(parser, "--scenarios", args.scenarios, SCENARIOS)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the namespaces and processes go
    results = []
    with tempfile.TemporaryDirectory(prefix="a3c-partition-") as tmp:
        for name in names:
            results.append(SCENARIOS[name](Path(tmp), args))
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
