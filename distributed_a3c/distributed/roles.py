"""What each rank does: rank 0 serves parameters and logs; ranks 1..server.shards-1 serve the other
slices of the parameters (server.shards > 1); every other rank is a worker."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from distributed_a3c.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_run_checkpoint,
    mismatch,
    save_checkpoint,
)
from distributed_a3c.config import Config, ConfigError
from distributed_a3c.distributed import rendezvous
from distributed_a3c.distributed import rpc as rpc_edge
from distributed_a3c.distributed.liveness import WorkerMonitor
from distributed_a3c.distributed.rpc import PeerLost
from distributed_a3c.distributed.signals import arm_graceful_sigterm, interrupted, orphaned, terminated_by_launcher
from distributed_a3c.envs import make_env_fn
from distributed_a3c.metrics import JsonlSink, MetricsHub, ProgressSink, WandbSink
from distributed_a3c.roster import WorkerRoster
from distributed_a3c.server import ParameterServer
from distributed_a3c.worker import Worker, build_model, peak_rss_mb

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
STOP_GRACE_S = 10.0
STOP_GRACE_SIGTERM_S = 1.0


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
        rpc_edge.say_goodbye(rank, shards)
    finally:
        rpc_edge.shutdown()
    return 0


def _build_server(cfg: Config, shard: int, world_size: int, state: dict | None) -> ParameterServer:
    torch.set_num_threads(1)
    obs_space, action_space = env_spaces(cfg)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone: every shard starts alike
    model = build_model(cfg, obs_space, action_space)
    workers = range(cfg.server.shards, world_size)
    per_push = cfg.worker.rollout_len * cfg.worker.envs_per_worker
    server = ParameterServer(model, cfg.optim, cfg.server, cfg.train, server_device(cfg), shard, workers, per_push)
    if state is not None:
        server.load_state_dict(state)
    return server


def resume_source(cfg: Config, run_dir: Path, config_dict: dict[str, Any]) -> tuple[Path | None, dict | None]:
    """The checkpoint this run continues from: the run directory's latest readable one (a restart), else
    `train.resume`, else none. Bad or foreign checkpoints are a ConfigError in one line."""
    try:
        found = latest_checkpoint(run_dir, cfg.train.keep_checkpoints) if cfg.train.auto_resume else None
        if found is None and cfg.train.resume:
            found = Path(cfg.train.resume), load_run_checkpoint(cfg.train.resume)
    except (CheckpointError, FileNotFoundError) as e:
        raise ConfigError(f"train.resume: {e}") from None
    if found is None:
        return None, None
    path, state = found
    why = mismatch(state, cfg.env.id, config_dict["model"])
    if why:
        raise ConfigError(f"checkpoint {str(path)!r} cannot continue this run: {why}")
    return path, state


def run_shard(cfg: Config, rank: int, world_size: int) -> int:
    """Parameter-server shard `rank` (> 0): serve its slice until the lead releases it."""
    store = rendezvous.attempt_store(rank, world_size, cfg.rpc.timeout_s, rpc_edge.store_url(cfg.rpc))
    resume_path = store.get("resume_path").decode()  # the lead's choice: every shard resumes alike
    state = load_run_checkpoint(resume_path) if resume_path else None
    server = _build_server(cfg, rank, world_size, state)
    rpc_edge.serve(server)
    rpc_edge.init(rank, world_size, cfg.rpc, shards=cfg.server.shards)
    # Until released, this rank answers pushes and the lead's final request for its state.
    try:
        lost = rpc_edge.wait_released(lambda: rpc_edge.ping(0, cfg.server.shards, cfg.rpc.timeout_s))
    finally:
        rpc_edge.shutdown()
    if lost is not None:
        raise PeerLost(f"lost the lead parameter server (rank 0 on {rendezvous.host_of(0)}): {lost}")
    return 0


def run_server(cfg: Config, world_size: int, run_dir: Path, config_dict: dict[str, Any]) -> int:
    shards = cfg.server.shards
    resume_path, state = resume_source(cfg, run_dir, config_dict)
    if shards > 1:
        store = rendezvous.attempt_store(0, world_size, cfg.rpc.timeout_s, rpc_edge.store_url(cfg.rpc))
        store.set("resume_path", str(resume_path.resolve()) if resume_path else "")
    server = _build_server(cfg, 0, world_size, state)
    device = server.device
    wandb_id = None
    if resume_path is not None:
        id_file = resume_path.parent / "wandb_run_id.txt"
        wandb_id = id_file.read_text().strip() if id_file.is_file() else None
        log.info("resumed from %s at %d env steps", resume_path, server.env_steps)
    rpc_edge.serve(server)
    roster = WorkerRoster(range(shards, world_size))
    rpc_edge.on_goodbye(roster.depart)

    sinks: list = [JsonlSink(run_dir / "metrics.jsonl")]
    wandb_sink = None
    if cfg.logger.wandb.mode != "disabled":
        wandb_sink = WandbSink(cfg.logger, run_dir, cfg.name, config_dict, resume_id=wandb_id)
        sinks.append(wandb_sink)
    if cfg.logger.progress:
        sinks.append(ProgressSink(cfg.train.total_env_steps))
    hub = MetricsHub(sinks)
    log.info(
        "parameter server: %d parameters%s on %s, %d worker%s; run dir %s",
        server.num_params,
        f" in {shards} shards" if shards > 1 else "",
        device,
        world_size - shards,
        "" if world_size - shards == 1 else "s",
        run_dir,
    )

    rpc_edge.init(0, world_size, cfg.rpc, shards=shards)
    arm_graceful_sigterm()

    def lost(rank: int, reason: str) -> None:
        if terminated_by_launcher():  # the launcher is taking every rank down: not news
            return
        # With a restart left, the job restarts from a checkpoint now, so that torchrun re-rendezvouses
        # with the nodes that are left (or their replacements); without one, A3C trains on.
        restart = rendezvous.restarts_left() > 0
        then = "restarting from a checkpoint" if restart else f"training on with {roster.alive} of {len(roster.ranks)}"
        log.warning("lost worker rank %d on %s (%s); %s", rank, rendezvous.host_of(rank), reason, then)
        if roster.alive == 0 or restart:
            server.request_stop("lost_workers")

    monitor = WorkerMonitor(roster, shards, cfg.rpc.timeout_s, lost).start()
    try:
        _serve_until_stop(server, hub, cfg, run_dir, config_dict, roster)
    finally:
        server.request_stop("interrupted" if interrupted() else "error")  # no-op if already stopping
        try:
            final_shards = rpc_edge.shard_states(shards, stop=True)
        except Exception as e:  # a shard rank is gone: keep the last complete checkpoint
            log.error("could not reach every parameter-server shard (%s); checkpoint not updated", e)
            final_shards = None
        if final_shards is not None:
            _save(server, run_dir, cfg, config_dict, final_shards)
        hub.log(_row(server, roster))
        for s in sinks:
            if s is not wandb_sink:
                s.close()
        summary = _summary(server, world_size, final_shards, roster)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        # Workers learn of the stop from their next reply and say goodbye; the lost never will.
        # After a SIGTERM the launcher is killing the workers too: don't wait long for them.
        grace = STOP_GRACE_SIGTERM_S if terminated_by_launcher() else STOP_GRACE_S
        roster.wait_all_departed(timeout_s=grace)
        monitor.stop()
        rpc_edge.release_shards(shards)
        rpc_edge.shutdown()
        offline_dir = wandb_sink.close() if wandb_sink else None
    print(
        f"done: {summary['exit_reason']} after {summary['env_steps']} env steps, "
        f"{summary['episodes']} episodes, mean-100 return {summary['mean_return_100']}, "
        f"{summary['wall_time_s']:.1f} s; run dir {run_dir}",
        flush=True,
    )
    if offline_dir:
        print(f"W&B offline run saved; upload it with: wandb sync {offline_dir}", flush=True)
    if summary["exit_reason"] == "lost_workers":
        lost_ranks = ", ".join(f"{r} on {rendezvous.host_of(r)}" for r in sorted(roster.lost))
        then = "the job restarts from the checkpoint" if rendezvous.restarts_left() > 0 else "no worker is left"
        raise PeerLost(f"lost worker rank {lost_ranks}: {then} (kept in {run_dir})")
    if orphaned():
        return 1
    return 0


def _serve_until_stop(
    server: ParameterServer,
    hub: MetricsHub,
    cfg: Config,
    run_dir: Path,
    config_dict: dict[str, Any],
    roster: WorkerRoster,
) -> None:
    next_log = time.monotonic() + cfg.train.log_interval_s
    next_ckpt = time.monotonic() + cfg.train.checkpoint_interval_s
    while server.poll_stop() is None:
        if interrupted():
            server.request_stop("interrupted")
            break
        time.sleep(min(0.05, cfg.train.log_interval_s))
        now = time.monotonic()
        if now >= next_log:
            hub.log(_row(server, roster))
            next_log = now + cfg.train.log_interval_s
        if now >= next_ckpt:
            _save(server, run_dir, cfg, config_dict, rpc_edge.shard_states(cfg.server.shards))
            next_ckpt = now + cfg.train.checkpoint_interval_s


def _row(server: ParameterServer, roster: WorkerRoster) -> dict[str, float]:
    return {**server.snapshot(), "server/workers_alive": roster.alive}


def _save(server: ParameterServer, run_dir: Path, cfg: Config, config_dict: dict[str, Any], shards: list) -> None:
    state = _checkpoint_state(server, config_dict, shards)
    save_checkpoint(run_dir / CHECKPOINT, state, keep=cfg.train.keep_checkpoints)


def _checkpoint_state(server: ParameterServer, config_dict: dict[str, Any], other_shards: list[dict]) -> dict[str, Any]:
    state = server.state_dict(other_shards)
    state["config"] = config_dict
    return state


def _summary(
    server: ParameterServer, world_size: int, other_shards: list[dict] | None, roster: WorkerRoster
) -> dict[str, Any]:
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
        "lost_workers": {str(r): why for r, why in sorted(roster.lost.items())},
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
