"""A cluster in network namespaces, where the network is the limit: packed shards, spread shards, node
aggregation, and both, against the number of nodes.

    python scripts/bench_cluster.py                                  # K = 2, 3, 4 nodes; mlp and pong sizes
    python scripts/bench_cluster.py --nodes 2,4 --sizes pong --seconds 40 --out docs/bench_cluster.json

K "nodes" (network namespaces on one bridge; scripts/_netns.py), each link shaped with `tc ... tbf` to a
rate at which it, not the machine's 2 cores, bounds the job: --mlp-mbit for the CartPole MLP (9k floats),
--pong-mbit for an MLP of the Pong network's size (hidden 580x580: 0.68M floats, as model.conv=a3c's).
Every node runs scripts/launch_multinode.sh with K+1 ranks; the recipes:

  packed     server.shards=K, all on node 0: every push crosses node 0's link
  spread     server.shards=K, one on each node: each link carries 1/K of every push
  aggregate  one server; on every node an aggregator sums its node's workers' pushes
  both       spread shards and node aggregation

Measured over the run's steady state: pushes/s at the lead, env steps/s (all, and those made off node 0,
whose workers reach the server over loopback), bytes per env step, and the busiest link's utilisation
(bytes it carried each way / its rate). Every job runs with `rpc.channels=[basic]`: the namespaces share
one kernel, and TensorPipe's default cma channel would copy tensors between them past the links. Needs
root, `ip netns` and `tc`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import fmt, int_list, meta, metrics_rows, print_tables, save_figure, say, write_json
from _netns import cluster, link_bytes, multinode_job, netns_missing

from distributed_a3c.server.placement import plan

PROG = "bench_cluster"
BIN = Path(sys.executable).parent
RECIPES = {  # with K nodes: (server.shards, placement, node_aggregate)
    "packed": lambda k: (k, "packed", False),
    "spread": lambda k: (k, "spread", False),
    "aggregate": lambda k: (1, "packed", True),
    "both": lambda k: (k, "spread", True),
}
SIZES = {"mlp": [], "pong": ["model.hidden_sizes=[580,580]"]}


def run_one(tmp: Path, k: int, recipe: str, size: str, args: argparse.Namespace) -> dict[str, Any]:
    rate = args.pong_mbit if size == "pong" else args.mlp_mbit
    run_dir = tmp / f"{recipe}-{size}-{k}"
    train = ["logger=quiet", "train.target_return=null", "train.total_env_steps=100000000000", "train.log_interval_s=1"]
    train.append("rpc.channels=[basic]")  # one kernel: TensorPipe's cma would copy tensors past the links
    shards, placement, aggregate = RECIPES[recipe](k)
    train += [f"server.shards={shards}", f"server.placement={placement}", f"server.node_aggregate={aggregate}"]
    train += [f"train.max_minutes={args.seconds / 60}", f"hydra.run.dir={run_dir}", *SIZES[size]]
    layout = plan(k * (k + 1), shards, placement, aggregate, k + 1, k)
    with cluster(k, rate) as nodes:
        env = {"RDZV_ENDPOINT": f"{nodes[0].addr}:29400", "NNODES": str(k), "NPROC_PER_NODE": str(k + 1)}
        env |= {"MAX_RESTARTS": "0", "RUN_ID": f"cl{uuid.uuid4().hex[:6]}", "A3C_VENV": str(BIN.parent)}
        with multinode_job(nodes, train, tmp, env, f"{run_dir.name}-", pause_s=0.3) as (procs, _):
            first = None
            deadline = time.monotonic() + args.seconds + 240
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                if first is None and any(r.get("global_step", 0) > 0 for r in metrics_rows(run_dir)):
                    first = (time.monotonic(), [link_bytes(n) for n in nodes], metrics_rows(run_dir)[-1])
                if first is not None and (run_dir / "summary.json").is_file():
                    break
                last = (time.monotonic(), [link_bytes(n) for n in nodes])
                time.sleep(0.5)
            if first is None or not (run_dir / "summary.json").is_file():
                raise RuntimeError(f"{recipe}, {size}, {k} nodes: no run; see {tmp}")
    summary = json.loads((run_dir / "summary.json").read_text())
    end = [r for r in metrics_rows(run_dir) if r.get("global_step")][-1]
    dt = max(last[0] - first[0], 1e-9)
    util = max(max(b[0] - a[0], b[1] - a[1]) * 8 / dt / (rate * 1e6) for a, b in zip(first[1], last[1], strict=True))
    span = max(end["time/wall_s"] - first[2]["time/wall_s"], 1e-9)
    # The share of env steps made off node 0 (whose workers reach the server over loopback): a push counts
    # the workers it sums (an aggregator's, its node's workers; a lone worker's, 1).
    steps = {int(r): n * max(1, len(layout.local_workers(int(r)))) for r, n in summary["pushes_per_rank"].items()}
    remote = sum(n for r, n in steps.items() if r >= k + 1) / max(sum(steps.values()), 1)
    env_steps_per_s = (end["global_step"] - first[2]["global_step"]) / span
    return {
        "recipe": recipe,
        "size": size,
        "nodes": k,
        "rate_mbit": rate,
        "workers": len(layout.workers),
        "pushers": len(summary["pushes_per_rank"]),
        "pushes_per_s": (end["server/pushes"] - first[2]["server/pushes"]) / span,
        "env_steps_per_s": env_steps_per_s,
        "remote_env_steps_per_s": env_steps_per_s * remote,
        "wire_bytes_per_env_step": summary["wire_bytes_per_env_step"],
        "busiest_link_utilisation": util,
        "link_bytes_per_s": [[(b[0] - a[0]) / dt, (b[1] - a[1]) / dt] for a, b in zip(first[1], last[1], strict=True)],
        "pushes_per_rank": summary["pushes_per_rank"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int_list, default=[2, 3, 4], help="node counts (default 2,3,4)")
    parser.add_argument("--sizes", default="mlp,pong", help="mlp, pong or both (default both)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"of {', '.join(RECIPES)}")
    parser.add_argument("--seconds", type=float, default=30.0, help="training seconds per run (default 30)")
    parser.add_argument("--mlp-mbit", type=float, default=4.0, help="link rate for the mlp runs (default 4)")
    parser.add_argument("--pong-mbit", type=float, default=40.0, help="link rate for the pong-sized runs (default 40)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="env steps/s against nodes, as a PNG")
    parser.add_argument("--plain", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through cluster(): namespaces removed
    missing = netns_missing(need_tc=True)
    if missing:
        parser.error(f"a rate-limited cluster needs root, `ip netns` and `tc`: {missing}")
    sizes, recipes = args.sizes.split(","), args.recipes.split(",")
    bad = [s for s in sizes if s not in SIZES] + [r for r in recipes if r not in RECIPES]
    if bad:
        parser.error(f"unknown size or recipe {bad[0]!r}: sizes {', '.join(SIZES)}; recipes {', '.join(RECIPES)}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="a3c-cluster-") as tmp:
        for size in sizes:
            for k in args.nodes:
                for recipe in recipes:
                    say(PROG, f"{recipe}, {size}, {k} nodes ...")
                    try:
                        results.append(run_one(Path(tmp), k, recipe, size, args))
                    except RuntimeError as e:
                        say(PROG, f"  failed: {e}")
                        continue
                    r = results[-1]
                    say(PROG, f"  {json.dumps(r)}")
    if args.out:  # before the table: a run's figures are never lost to a printing error
        run = meta([], f"{args.seconds:g} s per job")
        write_json(args.out, {"meta": run, "command": " ".join(sys.argv), "results": results})
    head = ["size", "nodes", "recipe", "workers", "pushers", "pushes/s", "env steps/s", "off node 0", "bytes/env step"]
    head.append("busiest link")
    body = [
        [
            r["size"],
            str(r["nodes"]),
            r["recipe"],
            str(r["workers"]),
            str(r["pushers"]),
            fmt(r["pushes_per_s"], ".1f"),
            fmt(r["env_steps_per_s"]),
            fmt(r["remote_env_steps_per_s"]),
            fmt(r["wire_bytes_per_env_step"]),
            fmt(r["busiest_link_utilisation"], ".2f"),
        ]
        for r in results
    ]
    print_tables([("cluster in namespaces, links shaped with tbf", head, body)], args.plain)
    if args.plot:
        plot(results, args.plot)
    return 0


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in results})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for recipe in RECIPES:
            pts = sorted(
                (r["nodes"], r["remote_env_steps_per_s"])
                for r in results
                if r["size"] == size and r["recipe"] == recipe
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", label=recipe)
        rate = next(r["rate_mbit"] for r in results if r["size"] == size)
        ax.set(xlabel="nodes", ylabel="env steps/s made off node 0", title=f"{size}, links at {rate:g} Mbit/s")
        ax.set_xticks(sorted({r["nodes"] for r in results}))
        ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
