"""The ranks of one bench_server.py configuration: the parameter-server shard(s) and the client processes
that push to them (each run as `bench_server.py --child server|client ...`), and `run_config`, which
starts them on a fresh loopback RPC world and reduces their results to one row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import kill_group, tail  # scripts/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
BENCH_SERVER = Path(__file__).resolve().parent / "bench_server.py"
SIZES = ("mlp", "atari")
ATARI_OBS = (4, 84, 84)
ATARI_ACTIONS = 6


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
    from distributed_a3c.server import ParameterServer, WorkerRoster
    from distributed_a3c.server.placement import plan
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
    rpc_edge.init(args.rank, args.world, cfg.rpc, layout=plan(args.world, cfg.server.shards, "packed"))
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
    from distributed_a3c.distributed.remote import remote_store
    from distributed_a3c.messages import WIRE_DTYPES, GradientPush
    from distributed_a3c.server.placement import plan
    from distributed_a3c.train import precheck
    from distributed_a3c.worker import peak_rss_mb

    torch.set_num_threads(1)
    cfg = precheck(args.overrides)
    grads = (torch.randn(args.numel) * 1e-3).to(WIRE_DTYPES[cfg.server.wire_dtype])
    rpc_edge.init(args.rank, args.world, cfg.rpc, layout=plan(args.world, cfg.server.shards, "packed"))
    t_start = time.perf_counter() + args.warmup
    t_end = t_start + args.seconds
    latencies: list[list[float]] = [[] for _ in range(args.threads)]
    completed = [0] * args.threads
    errors: list[str] = []

    def client(i: int) -> None:
        try:
            layout = plan(args.world, cfg.server.shards, "packed")
            store = remote_store(layout, args.rank, torch.device("cpu"))  # one push in flight per store
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
    rpc_edge.say_goodbye(args.rank)
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
                    str(BENCH_SERVER),
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
