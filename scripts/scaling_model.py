"""A model of the job's throughput on a real cluster: where each layout stops scaling (docs/SCALING.md).

    python scripts/scaling_model.py                         # the Pong network, 1/8/64 nodes x 32 cores
    python scripts/scaling_model.py --floats 1687719        # the Nature CNN instead
    python scripts/scaling_model.py --check docs/bench_cluster.json   # against the namespace cluster

Pushes per second of the whole job are the least of what the workers offer, what the server shards'
cores can apply, and what the busiest network link can carry:

  workers      N nodes x W workers x r pushes/s each
  shard CPU    every shard handles every push to it, on its slice: 1 / (c0 + c1 x P / S) pushes/s
               (c0: the fixed cost of a push round trip, c1: the cost per float, both measured by
               scripts/bench_server.py on one core)
  links        each push moves 4P bytes up (the gradient) and 4P down (the weights), full duplex;
               packed: all of it crosses node 0's link; spread: a node's link carries its workers' pushes to
               the other shards and its shard's share of everyone's; node aggregation: one push per node and
               window (W worker pushes summed) instead of W

Calibration (this project's 2-core machine, one core each): c0 = 0.67 ms (1,500 CartPole-MLP pushes/s, 9k
floats), c1 = 6.2 ns/float (90 Nature-CNN pushes/s, 1.69M floats); a Pong worker (+experiment=pong: 16
envs x 5 steps a push) pushes 11 times a second, 80 env steps (320 frames) each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

C0_S = 0.67e-3
C1_S = 6.2e-9
GBE = {"10 GbE": 10e9 / 8 * 0.8, "100 GbE": 100e9 / 8 * 0.8}  # bytes/s one way, at 80% of line rate


def capacity(layout: str, nodes: int, workers_per_node: int, floats: int, link: float, rate: float) -> dict:
    """Pushes/s of each bound, and the job's (their least), for one layout."""
    push = 4 * floats  # bytes each way per worker push (float32 gradient up, weights down)
    offered = nodes * workers_per_node * rate
    if layout == "packed":  # S = 8 shards on node 0's cores, in place of 8 workers
        shards = 8
        offered -= shards * rate
        cpu = 1 / (C0_S + C1_S * floats / shards)
        links = link / push if nodes > 1 else float("inf")
        forwards = 1.0
    elif layout == "spread":  # one shard per node
        shards = nodes
        cpu = 1 / (C0_S + C1_S * floats / shards)
        # A node's uplink: its workers' slices for the other shards + its shard's replies to other nodes.
        per_push_on_a_link = 2 * push * (nodes - 1) / nodes / nodes
        links = link / per_push_on_a_link if nodes > 1 else float("inf")
        forwards = 1.0
    else:  # "aggregate": one server, or "both": one shard per node; one push per node and window
        shards = nodes if layout == "both" else 1
        forwards = workers_per_node  # worker pushes summed in one forwarded push
        cpu = forwards / (C0_S + C1_S * floats / shards)
        if layout == "both":
            links = link / (2 * push * (nodes - 1) / nodes / nodes) * forwards if nodes > 1 else float("inf")
        else:
            links = link / push * forwards if nodes > 1 else float("inf")
    job = min(offered, cpu, links)
    bound = "workers" if job == offered else "server CPU" if job == cpu else "network link"
    return {"offered": offered, "cpu": cpu, "links": links, "pushes_per_s": job, "bound": bound, "shards": shards}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--floats", type=int, default=677_943, help="parameters (default: +experiment=pong's)")
    parser.add_argument("--nodes", default="1,8,64", help="node counts (default 1,8,64)")
    parser.add_argument("--cores", type=int, default=32, help="cores per node (default 32)")
    parser.add_argument("--rate", type=float, default=11.0, help="pushes/s of one worker (default 11, Pong)")
    parser.add_argument("--env-steps", type=int, default=80, help="env steps per push (default 80, Pong)")
    parser.add_argument("--check", type=Path, default=None, help="compare with a bench_cluster.py JSON")
    args = parser.parse_args()
    if args.check:
        return check(args.check)
    print("| nodes | link | layout | env steps/s | frames/s | bound |\n|---|---|---|---|---|---|")
    for nodes in [int(n) for n in args.nodes.split(",")]:
        for name, link in GBE.items():
            for layout in ("packed", "spread", "aggregate", "both"):
                spare = {"packed": 0, "spread": 1, "aggregate": 1, "both": 2}[layout]  # ranks not working
                c = capacity(layout, nodes, args.cores - spare, args.floats, link, args.rate)
                steps = c["pushes_per_s"] * args.env_steps
                print(f"| {nodes} | {name} | {layout} | {steps:,.0f} | {4 * steps:,.0f} | {c['bound']} |")
    print("\n| link | layout | workers-bound up to | then bound by | env steps/s at 64 / at 1 node |")
    print("|---|---|---|---|---|")
    for name, link in GBE.items():
        for layout in ("packed", "spread", "aggregate", "both"):
            spare = {"packed": 0, "spread": 1, "aggregate": 1, "both": 2}[layout]
            at = [capacity(layout, n, args.cores - spare, args.floats, link, args.rate) for n in range(1, 1025)]
            last = max((n for n, c in enumerate(at, 1) if c["bound"] == "workers"), default=0)
            then = next((c["bound"] for c in at[last:] if c["bound"] != "workers"), "-")
            gain = at[63]["pushes_per_s"] / at[0]["pushes_per_s"]
            up_to = "never" if last == 0 else "1024+ nodes" if last == 1024 else f"{last} node{'s' * (last > 1)}"
            print(f"| {name} | {layout} | {up_to} | {then} | {gain:.1f}x |")
    return 0


def link_bound(layout, per_node: int, floats: int, link: float) -> float:
    """Pushes/s of each pusher (all pushing alike) at which the busiest link is full: every pusher sends its
    slice to every shard off its node (4 bytes a float) and gets the slice's weights back."""
    slices = [floats / layout.shards] * layout.shards
    load: dict[tuple[int, str], float] = {}
    for pusher in layout.pushers:
        src = pusher // per_node
        for shard, size in zip(layout.shard_ranks, slices, strict=True):
            dst = shard // per_node
            if dst == src:
                continue
            for node, direction in ((src, "up"), (dst, "down"), (dst, "up"), (src, "down")):
                load[node, direction] = load.get((node, direction), 0.0) + 4 * size
    return link / max(load.values()) if load else float("inf")


def check(path: Path) -> int:
    """The model's link bound against what the namespace cluster measured off node 0."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from distributed_a3c.server.placement import plan

    recipes = {
        "packed": lambda k: (k, "packed", False),
        "spread": lambda k: (k, "spread", False),
        "aggregate": lambda k: (1, "packed", True),
        "both": lambda k: (k, "spread", True),
    }
    results = json.loads(path.read_text())["results"]
    print("| size | nodes | layout | measured env steps/s off node 0 | model: link bound | measured / model |")
    print("|---|---|---|---|---|---|")
    for r in results:
        k, per_node = r["nodes"], r["nodes"] + 1
        layout = plan(k * per_node, *recipes[r["recipe"]](k), per_node, k)
        floats = 681_503 if r["size"] == "pong" else 9_155
        per_pusher = link_bound(layout, per_node, floats, r["rate_mbit"] * 1e6 / 8)
        workers_off_node0 = sum(max(1, len(layout.local_workers(p))) for p in layout.pushers if p >= per_node)
        bound = per_pusher * workers_off_node0 * 160
        print(
            f"| {r['size']} | {k} | {r['recipe']} | {r['remote_env_steps_per_s']:,.0f} | {bound:,.0f} | "
            f"{r['remote_env_steps_per_s'] / bound:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
