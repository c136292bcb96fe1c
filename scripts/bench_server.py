"""Parameter-server throughput: synthetic clients push flat gradients over loopback RPC, no environments.

    python scripts/bench_server.py                                   # mlp + atari sizes, 1/4/16/64 clients, 3 s each
    python scripts/bench_server.py --sizes atari --clients 1,2,4,8,16,32,64 --seconds 5 --out server.json
    python scripts/bench_server.py server.wire_dtype=bfloat16 optim=rmsprop     # Hydra overrides for the server
    python scripts/bench_server.py --sizes atari --shards 1,2         # one server vs the weights in 2 shards
    python scripts/bench_server.py --sizes mlp --clients 16 --think-ms 10   # latency at a worker-like load

Each configuration is a fresh RPC world on 127.0.0.1: rank 0 hosts the real `ParameterServer` behind
`distributed_a3c.distributed.rpc` (the same `serve`/`init` as a training run), ranks 1.. are client
processes, each running several threads when there are more clients than `--max-procs`. Every client
thread loops `RemoteParameterStore.push` with a fixed random gradient of the model's size and keeps the
version of each reply, as a worker does, so the server applies every push and answers with fresh weights.
With --shards S > 1, ranks 0..S-1 each host one shard (server.shards=S) and a client pushes each slice to
its shard at once, through the same `ShardedParameterStore` as a worker.

Sizes: `mlp` is the default CartPole actor-critic built from the composed config (~9k floats); `atari`
is model=cnn, the Nature CNN for 4x84x84 frames and 6 actions (~1.7M floats). The server keeps every push
(server.max_staleness is raised unless you override it) so each push costs one optimizer step.

Pushes/s counts pushes completed inside the measured window (after --warmup) by all clients; latency is
client-side round trip (send gradient, server update, receive weights) of pushes started in the window.
With --think-ms a client pauses after each reply, so the offered load is below the ceiling and the latency
shows the queueing that a given number of workers would meet.
The ceiling is the client count after which pushes/s grows by less than --saturation (default 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _common import finite_json, fmt, int_list  # scripts/ is on sys.path
from _server_load import SIZES, build_sized_model, child_client, child_server, run_config

DEFAULT_OVERRIDES = ["server.max_staleness=1000000000"]


def ceiling(configs: list[dict[str, Any]], saturation: float) -> dict[str, Any]:
    """The best pushes/s, and the client count after which more clients add less than `saturation` of it."""
    best = max(configs, key=lambda c: c["pushes_per_s"])
    knee = configs[-1]
    for cur, nxt in zip(configs, configs[1:], strict=False):
        if nxt["pushes_per_s"] < (1 + saturation) * cur["pushes_per_s"]:
            knee = cur
            break
    return {
        "max_pushes_per_s": best["pushes_per_s"],
        "at_clients": best["clients"],
        "saturates_at_clients": knee["clients"],
        "saturated": knee is not configs[-1],
        "rule": f"first client count whose next count adds < {100 * saturation:g}% pushes/s",
    }


# ----- output ------------------------------------------------------------------------------------------------
def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    head = [
        "clients",
        "procs x thr",
        "pushes/s",
        "gain",
        "p50 ms",
        "p99 ms",
        "MiB/s",
        "srv busy",
        "srv cpu",
        "stale mean/p99",
    ]
    for size, s in results["sizes"].items():
        body, prev = [], None
        for c in s["configs"]:
            gain = c["pushes_per_s"] / prev if prev else None
            prev = c["pushes_per_s"]
            body.append(
                [
                    str(c["clients"]),
                    f"{c['procs']} x {c['threads_per_proc']}",
                    fmt(c["pushes_per_s"], ".0f"),
                    fmt(gain, ".2f"),
                    fmt(c["latency_ms_p50"], ".2f"),
                    fmt(c["latency_ms_p99"], ".2f"),
                    fmt(c["payload_mb_per_s"], ".0f"),
                    fmt(c["server_busy_fraction"], ".2f"),
                    fmt(c["server_cpu_fraction"], ".2f"),
                    f"{fmt(c['staleness_mean'], '.1f')}/{fmt(c['staleness_p99'], 'd')}",
                ]
            )
        cl = s["ceiling"]
        title = f"{size}: {s['numel']:,} floats ({s['source']}); best {cl['max_pushes_per_s']:.0f} pushes/s, " + (
            f"saturates at {cl['saturates_at_clients']} clients"
            if cl["saturated"]
            else f"no ceiling up to {cl['saturates_at_clients']} clients"
        )
        out.append((title, head, body))
    return out


def print_tables(results: dict[str, Any], plain: bool) -> None:
    from _common import print_tables as print_formatted

    print_formatted(tables(results), plain, first_column_left=False)


# ----- command line ------------------------------------------------------------------------------------------
def _cpu_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _size_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in SIZES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be a comma-separated subset of {','.join(SIZES)}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the server config (server.*, optim.*, rpc.*)")
    p.add_argument("--sizes", type=_size_list, default=list(SIZES), help="mlp,atari (default both)")
    p.add_argument("--clients", type=int_list, default=[1, 4, 16, 64], help="client counts (default 1,4,16,64)")
    p.add_argument("--shards", type=int_list, default=[1], help="server.shards values to compare (default 1)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per configuration (default 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before that (default 1)")
    p.add_argument("--max-procs", type=int, default=8, help="client processes at most; more clients become threads")
    p.add_argument("--saturation", type=float, default=0.10, help="growth below which pushes/s has stopped growing")
    p.add_argument("--timeout", type=float, default=None, help="kill a configuration after this many seconds")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    p.add_argument(
        "--echo",
        action="store_true",
        help="the server only answers each push with the weights (no update): the RPC layer's ceiling",
    )
    p.add_argument(
        "--pin", action="store_true", help="pin each server shard to a core of its own, the clients to the other cores"
    )
    p.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="each client waits this long after a reply before its next push, as a worker computes its next "
        "rollout (default 0: back to back, the server's ceiling)",
    )
    g = p.add_argument_group("internal")
    g.add_argument("--child", choices=["server", "client"], help=argparse.SUPPRESS)
    g.add_argument("--size", choices=SIZES, help=argparse.SUPPRESS)
    g.add_argument("--world", type=int, help=argparse.SUPPRESS)
    g.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    g.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    g.add_argument("--numel", type=int, help=argparse.SUPPRESS)
    g.add_argument("--result", help=argparse.SUPPRESS)
    g.add_argument("--server-cpus", type=_cpu_list, help=argparse.SUPPRESS)
    g.add_argument("--client-cpus", type=_cpu_list, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if args.child == "server":
        child_server(args)
        return 0
    if args.child == "client":
        child_client(args)
        return 0
    # SIGTERM unwinds like Ctrl-C, so the child process groups (own sessions) are killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.max_procs < 1:
        parser().error("--max-procs must be >= 1")
    if args.think_ms < 0:
        parser().error(f"--think-ms must be >= 0, not {args.think_ms:g}")
    cores = len(os.sched_getaffinity(0))
    if args.pin and cores < max(args.shards) + 1:
        parser().error(
            f"--pin needs {max(args.shards) + 1} cores (a core per server shard + the clients), this has {cores}"
        )
    if args.timeout is None:
        args.timeout = args.warmup + args.seconds + 180
    overrides = DEFAULT_OVERRIDES + list(args.overrides)
    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": platform.node(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_avg_1m_at_start": os.getloadavg()[0],
            "overrides": overrides,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "max_procs": args.max_procs,
            "pin": args.pin,
            "echo": args.echo,
            "think_ms": args.think_ms,
        },
        "sizes": {},
    }
    for size in args.sizes:
        model, source = build_sized_model(size, overrides)
        numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
        for shards in args.shards:
            configs = []
            for clients in args.clients:
                print(
                    f"bench_server: {size} ({numel:,} floats), {shards} shard(s), {clients} clients ...",
                    file=sys.stderr,
                    flush=True,
                )
                configs.append(run_config(size, numel, clients, shards, args, overrides))
            results["sizes"][size if shards == 1 else f"{size}, {shards} shards"] = {
                "numel": numel,
                "shards": shards,
                "source": source,
                "configs": configs,
                "ceiling": ceiling(configs, args.saturation),
            }
    print_tables(results, args.plain)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(finite_json(results), indent=2, allow_nan=False) + "\n")
        print(f"bench_server: wrote {args.out}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
