"""What each rank does: rank 0 serves parameters and logs; ranks 1..server.shards-1 serve the other
slices of the parameters (server.shards > 1); every other rank is a worker."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from distributed_a3c.checkpoint import load_checkpoint, save_checkpoint
from distributed_a3c.config import Config
from distributed_a3c.distributed import rpc as rpc_edge
from distributed_a3c.envs import make_env_fn
from distributed_a3c.metrics import JsonlSink, MetricsHub, ProgressSink, WandbSink
from distributed_a3c.server import ParameterServer
from distributed_a3c.worker import Worker, build_model, peak_rss_mb

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
STOP_GRACE_S = 10.0
STOP_GRACE_SIGTERM_S = 1.0


_interrupted = threading.Event()
_first_signal: int | None = None
_first_signal_at = 0.0
FORCE_AFTER_S = 1.0  # a signal this long after the first forces the exit (one Ctrl-C can arrive twice)


def _on_stop_signal(signum: int, frame: object) -> None:
    global _first_signal, _first_signal_at
    if not _interrupted.is_set():
        _first_signal, _first_signal_at = signum, time.monotonic()
        _interrupted.set()
    elif time.monotonic() - _first_signal_at > FORCE_AFTER_S:
        raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for a graceful end


def terminated_by_launcher() -> bool:
    """True once a SIGTERM asked this rank to stop: the launcher is tearing the job down."""
    return _first_signal == signal.SIGTERM


def install_signal_handlers(rank: int) -> None:
    """Ctrl-C / SIGTERM make the server stop training gracefully (final checkpoint and summary).

    Ctrl-C reaches every rank of a terminal's job; workers ignore it and stop when the server's reply
    says so. A SIGTERM on a worker (e.g. from torchrun tearing the job down) ends it at once.
    """
    if rank == 0:
        signal.signal(signal.SIGINT, _on_stop_signal)
        signal.signal(signal.SIGTERM, _on_stop_signal)
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def worker_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def server_device(cfg: Config) -> torch.device:
    if cfg.server.device == "cuda" or (cfg.server.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def env_spaces(cfg: Config) -> tuple[gym.Space, gym.Space]:
    env = make_env_fn(cfg.env)()
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def run_worker(cfg: Config, rank: int, world_size: int) -> int:
    torch.set_num_threads(cfg.worker.torch_threads)
    device = worker_device()
    sdev = server_device(cfg)
    device_map = {device: sdev} if device.type == "cuda" and sdev.type == "cuda" else None
    shards = cfg.server.shards
    worker = Worker(cfg, rank, rpc_edge.remote_store(shards, device, sdev), device)
    rpc_edge.init(rank, world_size, cfg.rpc, device_map, shards)
    try:
        worker.run()
    except BaseException:
        rpc_edge.shutdown(graceful=False)  # the server may be gone: don't wait for it at a barrier
        raise
    rpc_edge.shutdown()
    return 0


def _build_server(cfg: Config, shard: int) -> ParameterServer:
    torch.set_num_threads(1)
    obs_space, action_space = env_spaces(cfg)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone: every shard starts alike
    model = build_model(cfg, obs_space, action_space)
    server = ParameterServer(model, cfg.optim, cfg.server, cfg.train, server_device(cfg), shard)
    if cfg.train.resume:
        server.load_state_dict(load_checkpoint(cfg.train.resume))
    return server


def run_shard(cfg: Config, rank: int, world_size: int) -> int:
    """Parameter-server shard `rank` (> 0): serve its slice until every rank has finished."""
    server = _build_server(cfg, rank)
    rpc_edge.serve(server)
    rpc_edge.init(rank, world_size, cfg.rpc, shards=cfg.server.shards)
    # A graceful shutdown returns once every rank has called it: the lead last, after it has fetched this
    # shard's final state for the checkpoint. Until then this rank keeps answering pushes.
    rpc_edge.shutdown()
    return 0


def run_server(cfg: Config, world_size: int, run_dir: Path, config_dict: dict[str, Any]) -> int:
    server = _build_server(cfg, 0)
    device = server.device
    wandb_id = None
    if cfg.train.resume:
        id_file = Path(cfg.train.resume).parent / "wandb_run_id.txt"
        wandb_id = id_file.read_text().strip() if id_file.is_file() else None
        log.info("resumed from %s at %d env steps", cfg.train.resume, server.env_steps)
    rpc_edge.serve(server)

    sinks: list = [JsonlSink(run_dir / "metrics.jsonl")]
    wandb_sink = None
    if cfg.logger.wandb.mode != "disabled":
        wandb_sink = WandbSink(cfg.logger, run_dir, cfg.name, config_dict, resume_id=wandb_id)
        sinks.append(wandb_sink)
    if cfg.logger.progress:
        sinks.append(ProgressSink(cfg.train.total_env_steps))
    hub = MetricsHub(sinks)
    shards = cfg.server.shards
    log.info(
        "parameter server: %d parameters%s on %s, %d workers; run dir %s",
        server.num_params,
        f" in {shards} shards" if shards > 1 else "",
        device,
        world_size - shards,
        run_dir,
    )

    rpc_edge.init(0, world_size, cfg.rpc, shards=shards)
    try:
        _serve_until_stop(server, hub, cfg, run_dir, config_dict)
    finally:
        server.request_stop("interrupted" if _interrupted.is_set() else "error")  # no-op if already stopping
        try:
            final_shards = rpc_edge.shard_states(shards, stop=True)
        except Exception as e:  # a shard rank is gone: keep the last complete checkpoint
            log.error("could not reach every parameter-server shard (%s); checkpoint not updated", e)
            final_shards = None
        if final_shards is not None:
            save_checkpoint(run_dir / CHECKPOINT, _checkpoint_state(server, config_dict, final_shards))
        hub.log(server.snapshot())
        for s in sinks:
            if s is not wandb_sink:
                s.close()
        summary = _summary(server, world_size, final_shards)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        # Workers learn of the stop from their next reply; a worker that is gone never will.
        # After a SIGTERM the launcher is killing the workers too: don't wait long for them.
        grace = STOP_GRACE_SIGTERM_S if terminated_by_launcher() else STOP_GRACE_S
        all_told = server.wait_workers_told_to_stop(set(range(shards, world_size)), timeout_s=grace)
        rpc_edge.shutdown(graceful=all_told)
        offline_dir = wandb_sink.close() if wandb_sink else None
    print(
        f"done: {summary['exit_reason']} after {summary['env_steps']} env steps, "
        f"{summary['episodes']} episodes, mean-100 return {summary['mean_return_100']}, "
        f"{summary['wall_time_s']:.1f} s; run dir {run_dir}",
        flush=True,
    )
    if offline_dir:
        print(f"W&B offline run saved; upload it with: wandb sync {offline_dir}", flush=True)
    return 0


def _serve_until_stop(
    server: ParameterServer, hub: MetricsHub, cfg: Config, run_dir: Path, config_dict: dict[str, Any]
) -> None:
    next_log = time.monotonic() + cfg.train.log_interval_s
    next_ckpt = time.monotonic() + cfg.train.checkpoint_interval_s
    while server.poll_stop() is None:
        if _interrupted.is_set():
            server.request_stop("interrupted")
            break
        time.sleep(min(0.05, cfg.train.log_interval_s))
        now = time.monotonic()
        if now >= next_log:
            hub.log(server.snapshot())
            next_log = now + cfg.train.log_interval_s
        if now >= next_ckpt:
            shard_states = rpc_edge.shard_states(cfg.server.shards)
            save_checkpoint(run_dir / CHECKPOINT, _checkpoint_state(server, config_dict, shard_states))
            next_ckpt = now + cfg.train.checkpoint_interval_s


def _checkpoint_state(server: ParameterServer, config_dict: dict[str, Any], other_shards: list[dict]) -> dict[str, Any]:
    state = server.state_dict(other_shards)
    state["config"] = config_dict
    return state


def _summary(server: ParameterServer, world_size: int, other_shards: list[dict] | None) -> dict[str, Any]:
    rets = list(server.returns)
    shards = len(server.bounds)
    wall = max(server.elapsed_s(), 1e-9)
    rss = {r: s.get("worker/max_rss_mb") for r, s in sorted(server.last_stats.items())}
    worker_rss = {str(r): round(v, 1) for r, v in rss.items() if v is not None}
    return {
        "exit_reason": server.stop_reason,
        "env_steps": server.env_steps,
        "episodes": server.episodes,
        "mean_return_100": round(sum(rets) / len(rets), 2) if rets else None,
        "wall_time_s": round(server.elapsed_s(), 3),
        "weight_version": server.version,
        "pushes_per_rank": {str(r): server.pushes_by_rank.get(r, 0) for r in range(shards, world_size)},
        "dropped_pushes": server.dropped,
        "rejected_pushes": server.rejected,
        "staleness": server.staleness_summary(),
        "server_busy_fraction": round(server.busy_s / wall, 4),
        "shards": [
            {"shard": k, "version": s["version"], "pushes": s["pushes"], "busy_fraction": round(s["busy_s"] / wall, 4)}
            for k, s in enumerate([server.shard_stats(), *(other_shards or [])])
        ],
        "peak_rss_mb_by_rank": {"0": round(peak_rss_mb(), 1), **worker_rss},
    }
