"""What each rank does over RPC: rank 0 serves parameters and runs the trainer (trainer.py); ranks
1..server.shards-1 serve the other slices of the parameters (server.shards > 1); every other rank is a
worker. The edge only: the run's lifecycle lives in trainer.py, the algorithm in rl/."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from distributed_a3c.build import build_server, server_device
from distributed_a3c.checkpoint import load_run_checkpoint
from distributed_a3c.config import Config
from distributed_a3c.distributed import rendezvous
from distributed_a3c.distributed import rpc as rpc_edge
from distributed_a3c.distributed.liveness import upstream_watch, worker_monitor
from distributed_a3c.distributed.remote import peer_words, remote_store
from distributed_a3c.distributed.rpc import PeerLost
from distributed_a3c.distributed.signals import (
    arm_graceful_sigterm,
    interrupted,
    launcher_gone,
    terminated_by_launcher,
)
from distributed_a3c.distributed.supervise import record_exit, say_line
from distributed_a3c.models import build_model, env_spaces
from distributed_a3c.server import BatchingPredictor, WorkerRoster
from distributed_a3c.server.aggregator import NodeAggregator
from distributed_a3c.server.placement import Layout
from distributed_a3c.trainer import Trainer, resume_source
from distributed_a3c.worker import make_worker

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
STOP_GRACE_SIGTERM_S = 1.0
OTHER_NODES_GRACE_S = 10.0  # the lead's wait for the other nodes' ranks to exit at the end
AGENT_NOTICE_S = 1.0  # then for their torchrun agents to see it (they poll every 0.1 s)


def worker_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def run_worker(cfg: Config, rank: int, world_size: int, layout: Layout) -> int:
    torch.set_num_threads(cfg.worker.torch_threads)
    device = worker_device()
    sdev = server_device(cfg)
    device_map = {device: sdev} if device.type == "cuda" and sdev.type == "cuda" else None
    store = remote_store(layout, rank, device, sdev, synchronous=cfg.mode == "sync")
    worker = make_worker(cfg, rank, store, device)
    rpc_edge.init(rank, world_size, cfg.rpc, device_map, layout)
    watch = upstream_watch(rank, cfg.rpc.liveness_timeout_s, _upstream_silent).start()
    try:
        worker.run()
        watch.stop()  # told to stop: the server may leave while this worker says goodbye
        rpc_edge.say_goodbye(rank)
    finally:
        watch.stop()
        rpc_edge.shutdown()
    return 0


def _upstream_silent(peer: int, reason: str) -> None:
    """What a worker (or aggregator) pushes to answered no ping for rpc.liveness_timeout_s (its node is cut
    off or frozen): say so in one line and leave now; a push in flight would only time out later."""
    what = peer_words(rpc_edge.rank_name(peer))
    cause = f"lost {what} (rank {peer} on {rendezvous.host_of(peer)}): no answer to pings: {reason}"
    record_exit(1, cause)
    where = f"rank {os.environ.get('RANK', '?')} on {socket.gethostname()}"
    say_line(f"a3c-train: error ({where}): {cause}")
    os._exit(1)


def run_aggregator(cfg: Config, rank: int, world_size: int, layout: Layout) -> int:
    """server.node_aggregate: sum this node's workers' pushes into one push per window to the shards, and
    hand the replies' weights back, until training is over and the node's workers have left."""
    torch.set_num_threads(1)
    local = layout.local_workers(rank)
    numel = sum(p.numel() for p in build_model(cfg, *env_spaces(cfg)).parameters() if p.requires_grad)
    upstream = remote_store(layout, rank, torch.device("cpu"), torch.device("cpu"))
    per_push = cfg.worker.push_env_steps
    aggregator = NodeAggregator(rank, upstream, local, numel, per_push, cfg.server.aggregate_window_ms / 1000)
    roster = WorkerRoster(local)
    rpc_edge.serve_aggregator(aggregator)
    rpc_edge.on_goodbye(roster.depart)
    rpc_edge.init(rank, world_size, cfg.rpc, layout=layout)

    def lost(worker: int, reason: str) -> None:
        log.warning("node aggregator %d lost worker rank %d (%s); its windows go on without it", rank, worker, reason)
        aggregator.lose(worker)

    watches = [
        upstream_watch(rank, cfg.rpc.liveness_timeout_s, _upstream_silent).start(),
        worker_monitor(roster, cfg.rpc.liveness_timeout_s, lost).start(),
    ]
    try:
        while roster.pending() and not (aggregator.stopped.is_set() and roster.wait_all_departed(STOP_GRACE_S)):
            time.sleep(0.2)
        for watch in watches:
            watch.stop()
        rpc_edge.say_goodbye(rank)
    finally:
        for watch in watches:
            watch.stop()
        rpc_edge.shutdown()
    return 0


def run_shard(cfg: Config, rank: int, world_size: int, layout: Layout) -> int:
    """A parameter-server shard other than the lead: serve its slice until the lead releases it."""
    store = rendezvous.attempt_store(rank, world_size, cfg.rpc.timeout_s, rpc_edge.store_url(cfg.rpc))
    resume_path = store.get("resume_path").decode()  # the lead's choice: every shard resumes alike
    state = load_run_checkpoint(resume_path) if resume_path else None
    server = build_server(cfg, layout.shard_index(rank), world_size, state, layout)
    rpc_edge.serve(server)
    rpc_edge.init(rank, world_size, cfg.rpc, layout=layout)
    # Until released, this rank answers pushes and the lead's final request for its state.
    try:
        lost = rpc_edge.wait_released(lambda: rpc_edge.ping(0, cfg.rpc.liveness_timeout_s))
    finally:
        rpc_edge.shutdown()
    if lost is not None:
        raise PeerLost(f"lost the lead parameter server (rank 0 on {rendezvous.host_of(0)}): {lost}")
    return 0


def _leave_after_other_nodes(world_size: int) -> None:
    """On the lead of a job on several nodes: wait until the other nodes' ranks are gone, and a moment for
    their agents to notice, so that this node's torchrun agent reaches the exit barrier last. Its rendezvous
    store lives in that agent: leaving the barrier first can cut off the last agent's wait and print a
    traceback on a job that succeeded (pytorch/pytorch#69520)."""
    first_remote = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))  # torchrun numbers ranks node by node
    if first_remote >= world_size:
        return
    rpc_edge.wait_gone(list(range(first_remote, world_size)), timeout_s=OTHER_NODES_GRACE_S)
    time.sleep(AGENT_NOTICE_S)


def run_server(cfg: Config, world_size: int, run_dir: Path, config_dict: dict[str, Any], layout: Layout) -> int:
    """Rank 0: the lead parameter server and the run's lifecycle (trainer.py), pushes arriving over RPC."""
    shards = cfg.server.shards
    resume_path, state = resume_source(cfg, run_dir, config_dict)
    if shards > 1:
        store = rendezvous.attempt_store(0, world_size, cfg.rpc.timeout_s, rpc_edge.store_url(cfg.rpc))
        store.set("resume_path", str(resume_path.resolve()) if resume_path else "")
    server = build_server(cfg, 0, world_size, state, layout)
    if resume_path is not None:
        log.info("resumed from %s at %d env steps", resume_path, server.stats.env_steps)
    roster = WorkerRoster(layout.pushers)
    predictor = None
    if cfg.mode == "central":
        c = cfg.central
        predictor = BatchingPredictor(
            server.act, server.observations_error, lambda: len(roster.pending()), c.max_batch, c.max_wait_ms
        ).start()
    rpc_edge.serve(server, expected_pushes=lambda: len(roster.pending()), predictor=predictor)
    rpc_edge.on_goodbye(roster.depart)

    def heard_from(rank: int) -> None:
        if roster.revive(rank):  # its pushes are validated as any other's; too stale ones are dropped
            log.warning(
                "worker rank %d on %s is back after being declared lost; it trains on", rank, rendezvous.host_of(rank)
            )

    rpc_edge.on_heard_from(heard_from)
    trainer = Trainer(
        cfg, run_dir, config_dict, server, roster, resume_path, lambda stop: rpc_edge.shard_states(shards, stop)
    )
    workers = len(layout.workers)
    log.info(
        "parameter server: %d parameters%s on %s, %d worker%s; run dir %s",
        server.num_params,
        f" in {shards} shards (ranks {', '.join(map(str, layout.shard_ranks))})" if shards > 1 else "",
        server.device,
        workers,
        "" if workers == 1 else "s",
        run_dir,
    )
    if layout.aggregators:
        log.info(
            "node aggregators: ranks %s, each for its node's %d workers",
            layout.aggregators,
            layout.pushes_per_forward(),
        )

    rpc_edge.init(0, world_size, cfg.rpc, layout=layout)
    arm_graceful_sigterm()

    def lost(rank: int, reason: str) -> None:
        if terminated_by_launcher():  # the launcher is taking every rank down: not news
            return
        # With a restart left, the job restarts from a checkpoint now, so that torchrun re-rendezvouses
        # with the nodes that are left (or their replacements); without one, A3C trains on.
        restart = rendezvous.restarts_left() > 0
        then = "restarting from a checkpoint" if restart else f"training on with {roster.alive} of {len(roster.ranks)}"
        if cfg.mode == "sync" and not restart:
            then += " (each step now waits for those only)"
        log.warning("lost worker rank %d on %s (%s); %s", rank, rendezvous.host_of(rank), reason, then)
        if roster.alive == 0 or restart:
            server.request_stop("interrupted" if launcher_gone() else "lost_workers")
        elif cfg.mode == "sync":
            server.release_waiting(len(roster.pending()))

    monitor = worker_monitor(roster, cfg.rpc.liveness_timeout_s, lost).start()
    try:
        while trainer.tick() is None:
            if interrupted():
                server.request_stop("interrupted")
                break
            time.sleep(min(0.05, cfg.train.log_interval_s))
    finally:
        server.request_stop("interrupted" if interrupted() else "error")  # no-op if already stopping
        summary = trainer.finish(world_size, {r: rendezvous.host_of(r) for r in range(world_size)})
        # Workers learn of the stop from their next reply and say goodbye; the lost never will.
        # After a SIGTERM the launcher is killing the workers too: don't wait long for them.
        roster.wait_all_departed(timeout_s=STOP_GRACE_SIGTERM_S if terminated_by_launcher() else STOP_GRACE_S)
        monitor.stop()
        if predictor is not None:
            predictor.stop()
        rpc_edge.release_shards(shards)
        _leave_after_other_nodes(world_size)
        rpc_edge.shutdown()
        offline_dir = trainer.close_wandb()
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
    return 1 if launcher_gone() else 0
