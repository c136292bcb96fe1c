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
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import finite_json, fmt, int_list, kill_group, tail  # scripts/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("mlp", "atari")
ATARI_OBS = (4, 84, 84)
ATARI_ACTIONS = 6
DEFAULT_OVERRIDES = ["server.max_staleness=1000000000"]


# ----- the models whose size the gradients have ----------------------------------------------------------
def build_sized_model(size: str, overrides: list[str]):
    """(model, where it came from) for `size`: the composed config's policy, or the Nature CNN."""
    import gymnasium as gym
    import numpy as np

    from distributed_a3c.models import build_model, build_policy, env_spaces
    from distributed_a3c.train import precheck

    if size == "mlp":
        cfg = precheck(overrides)
        return build_model(cfg, *env_spaces(cfg)), f"model={cfg.model.name} for {cfg.env.id} (composed config)"
    obs = gym.spaces.Box(0, 255, ATARI_OBS, np.uint8)
    act = gym.spaces.Discrete(ATARI_ACTIONS)
    model = build_policy("cnn", obs, act, hidden_sizes=[512], activation="relu", shared_torso=True)
    return model, f"model=cnn (models.py) for {ATARI_OBS} frames, {ATARI_ACTIONS} actions"


class _EchoServer:
    """--echo: answer every push with a copy of the weights and do nothing else (the RPC layer's floor)."""

    def __init__(self, server) -> None:
        self.server = server
        self.pushes = 0

    def pull(self, rank=None):
        return self.server.pull(rank)

    def push(self, req):
        from distributed_a3c.messages import WeightsReply

        self.pushes += 1  # a pull copies the weights as a push's reply would
        return WeightsReply(req.version + 1, self.server.pull().weights, shard_versions=None)


# ----- child processes --------------------------------------------------------------------------------------
def _pin(cpus: list[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def child_server(args: argparse.Namespace) -> None:
    import torch

    _pin(args.server_cpus)
    from distributed_a3c.config import TrainConfig
    from distributed_a3c.distributed import rpc as rpc_edge
    from distributed_a3c.roster import WorkerRoster
    from distributed_a3c.server import ParameterServer
    from distributed_a3c.train import precheck
    from distributed_a3c.worker import peak_rss_mb

    torch.set_num_threads(1)
    cfg = precheck(args.overrides)
    model, _ = build_sized_model(args.size, args.overrides)
    never = TrainConfig(total_env_steps=2**62, target_return=None, max_minutes=None)
    server = ParameterServer(model, cfg.optim, cfg.server, never, shard=args.rank)
    target = _EchoServer(server) if args.echo else server
    rpc_edge.serve(target)
    clients = WorkerRoster(range(cfg.server.shards, args.world))
    rpc_edge.on_goodbye(clients.depart)
    rpc_edge.init(args.rank, args.world, cfg.rpc, shards=cfg.server.shards)
    t0, busy0, cpu0 = time.monotonic(), server.busy_s, time.process_time()
    clients.wait_all_departed(timeout_s=args.warmup + args.seconds + 120)
    rpc_edge.shutdown()
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    _write(
        args.result,
        {
            "numel": server.num_params,
            "shard_numel": server.shard_numel,
            "pushes": target.pushes,
            "busy_fraction": (server.busy_s - busy0) / max(elapsed, 1e-9),
            "cpu_fraction": cpu / max(elapsed, 1e-9),
            "staleness": server.stats.staleness_summary() if server.stats else {},
            "dropped": server.dropped,
            "rejected": server.rejected,
            "peak_rss_mb": peak_rss_mb(),
            "rpc_threads": cfg.rpc.num_threads,
            "wire_dtype": cfg.server.wire_dtype,
            "optim": cfg.optim.name,
        },
    )


def child_client(args: argparse.Namespace) -> None:
    import torch

    _pin(args.client_cpus)
    from distributed_a3c.distributed import rpc as rpc_edge
    from distributed_a3c.messages import WIRE_DTYPES, GradientPush
    from distributed_a3c.train import precheck
    from distributed_a3c.worker import peak_rss_mb

    torch.set_num_threads(1)
    cfg = precheck(args.overrides)
    grads = (torch.randn(args.numel) * 1e-3).to(WIRE_DTYPES[cfg.server.wire_dtype])
    rpc_edge.init(args.rank, args.world, cfg.rpc, shards=cfg.server.shards)
    t_start = time.perf_counter() + args.warmup
    t_end = t_start + args.seconds
    latencies: list[list[float]] = [[] for _ in range(args.threads)]
    completed = [0] * args.threads
    errors: list[str] = []

    def client(i: int) -> None:
        try:
            store = rpc_edge.remote_store(cfg.server.shards, torch.device("cpu"))  # one push in flight per store
            reply = store.pull()
            while (a := time.perf_counter()) < t_end:
                request = GradientPush(
                    args.rank, reply.version, grads, env_steps=0, shard_versions=reply.shard_versions
                )
                reply = store.push(request)
                b = time.perf_counter()
                if a >= t_start:
                    latencies[i].append(1e3 * (b - a))
                if t_start <= b <= t_end:
                    completed[i] += 1
                if args.think_ms > 0:
                    time.sleep(args.think_ms / 1e3)
        except Exception as e:  # reported, and the parent fails the configuration
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rpc_edge.say_goodbye(args.rank, cfg.server.shards)
    rpc_edge.shutdown()
    _write(
        args.result,
        {
            "completed": sum(completed),
            "latencies_ms": [x for lat in latencies for x in lat],
            "errors": errors,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


def _write(path: str, result: dict[str, Any]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)


# ----- one configuration: the server shard(s) + client processes -------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def split_clients(clients: int, max_procs: int) -> list[int]:
    """Threads per client process: `clients` spread over at most `max_procs` processes."""
    procs = min(clients, max_procs)
    return [clients // procs + (i < clients % procs) for i in range(procs)]


def run_config(
    size: str, numel: int, clients: int, shards: int, args: argparse.Namespace, overrides: list[str]
) -> dict[str, Any]:
    threads = split_clients(clients, args.max_procs)
    world = shards + len(threads)
    overrides = [*overrides, f"server.shards={shards}"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "TP_SOCKET_IFNAME": "lo"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    env.pop("LOCAL_RANK", None)
    timing = ["--warmup", str(args.warmup), "--seconds", str(args.seconds), "--think-ms", str(args.think_ms)]
    timing += ["--echo"] if args.echo else []
    if args.pin:  # the server shard(s) on the first core(s), the clients on the rest
        cpus = sorted(os.sched_getaffinity(0))  # enough of them: checked in main()
        timing += [
            "--server-cpus",
            ",".join(map(str, cpus[:shards])),
            "--client-cpus",
            ",".join(map(str, cpus[shards:])),
        ]
    with tempfile.TemporaryDirectory(prefix="a3c-bench-server-") as tmp:
        d = Path(tmp)
        specs = [["--child", "server", "--size", size, "--world", str(world), "--rank", str(k)] for k in range(shards)]
        for rank, n in enumerate(threads, start=shards):
            specs.append(["--child", "client", "--rank", str(rank), "--threads", str(n), "--numel", str(numel)])
            specs[-1] += ["--world", str(world)]
        procs = []
        try:
            for i, spec in enumerate(specs):
                log = open(d / f"rank{i}.log", "w")  # noqa: SIM115 (closed with the process)
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    *spec,
                    *timing,
                    "--result",
                    str(d / f"rank{i}.json"),
                ]
                procs.append(
                    (
                        subprocess.Popen(
                            [*cmd, *overrides], cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
                        ),
                        log,
                    )
                )
            deadline = time.monotonic() + args.timeout
            while any(p.poll() is None for p, _ in procs):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{size}, {clients} clients: still running after {args.timeout:g} s")
                time.sleep(0.05)
            failed = [i for i, (p, _) in enumerate(procs) if p.returncode != 0]
            if failed:
                raise RuntimeError(
                    f"{size}, {clients} clients: rank {failed[0]} exited with {procs[failed[0]][0].returncode}"
                )
        except BaseException as e:
            for p, _ in procs:
                kill_group(p)
            logs = "\n".join(
                f"--- rank {i}\n{tail((d / f'rank{i}.log').read_text(errors='replace'), 8)}" for i in range(len(procs))
            )
            if isinstance(e, RuntimeError):
                raise RuntimeError(f"{e}\n{logs}") from None
            raise
        finally:
            for _, log in procs:
                log.close()
        results = [json.loads((d / f"rank{i}.json").read_text()) for i in range(world)]
    server, shard_results, client_results = results[0], results[:shards], results[shards:]
    errors = [e for c in client_results for e in c["errors"]]
    if errors:
        raise RuntimeError(f"{size}, {clients} clients: a client failed: {errors[0]}")
    lat = sorted(x for c in client_results for x in c["latencies_ms"])
    pushes_per_s = sum(c["completed"] for c in client_results) / args.seconds
    bytes_per_push = numel * _dtype_bytes(server["wire_dtype"]) * 2  # gradient up, weights down
    return {
        "clients": clients,
        "shards": shards,
        "procs": len(threads),
        "threads_per_proc": max(threads),
        "pushes_per_s": pushes_per_s,
        "latency_ms_p50": quantile(lat, 0.50),
        "latency_ms_p99": quantile(lat, 0.99),
        "latency_ms_mean": sum(lat) / len(lat) if lat else None,
        "latency_ms_max": lat[-1] if lat else None,
        "payload_mb_per_s": pushes_per_s * bytes_per_push / 2**20,
        "server_busy_fraction": max(s["busy_fraction"] for s in shard_results),
        "shard_busy_fractions": [s["busy_fraction"] for s in shard_results],
        "server_cpu_fraction": max(s["cpu_fraction"] for s in shard_results),
        "staleness_mean": server["staleness"].get("mean"),
        "staleness_p99": server["staleness"].get("p99"),
        "dropped_pushes": server["dropped"],
        "peak_rss_mb_server": server["peak_rss_mb"],
        "peak_rss_mb_client_max": max(c["peak_rss_mb"] for c in client_results),
        "server_numel": server["numel"],
        "wire_dtype": server["wire_dtype"],
        "rpc_threads": server["rpc_threads"],
        "optim": server["optim"],
    }


def _dtype_bytes(name: str) -> int:
    return 4 if name == "float32" else 2


def quantile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of an ascending list."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


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
