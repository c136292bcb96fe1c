"""RPC edge: start/stop the agent, expose the server's push/pull, and a remote ParameterStore.

Rank k < server.shards hosts parameter-server shard k (named `server`, `server1`, ...); the other
ranks are workers (`worker<rank>`).
"""

from __future__ import annotations

import logging
import os
import warnings

import torch
import torch.distributed.rpc as rpc

from distributed_a3c.config import RpcConfig
from distributed_a3c.distributed.netif import interface_for
from distributed_a3c.messages import ParameterStore, PushReply, PushRequest
from distributed_a3c.server import ParameterServer
from distributed_a3c.sharding import ShardedParameterStore

log = logging.getLogger(__name__)

SERVER = "server"

_server: ParameterServer | None = None  # set on the server rank only


def shard_name(shard: int) -> str:
    return SERVER if shard == 0 else f"{SERVER}{shard}"


def rank_name(rank: int, shards: int = 1) -> str:
    return shard_name(rank) if rank < shards else f"worker{rank}"


def serve(server: ParameterServer) -> None:
    """Make `server` the target of incoming push/pull calls on this rank."""
    global _server
    _server = server


def _push(request: PushRequest) -> PushReply:
    assert _server is not None, "push reached a rank that hosts no parameter server"
    return _server.push(request)


def _pull(rank: int | None) -> PushReply:
    assert _server is not None, "pull reached a rank that hosts no parameter server"
    return _server.pull(rank)


def _shard_state(stop: bool) -> dict:
    assert _server is not None, "a shard's state was asked of a rank that hosts no parameter server"
    if stop:
        _server.request_stop("stopped by the lead shard")
    return _server.shard_state()


def shard_states(shards: int, stop: bool = False) -> list[dict]:
    """From the lead: the states of shards 1..shards-1 (their slices, optimizer states, counters).

    stop: freeze them first, so the states are final (the end of training).
    """
    futures = [rpc.rpc_async(shard_name(k), _shard_state, args=(stop,)) for k in range(1, shards)]
    return [f.wait() for f in futures]


def remote_store(shards: int, device: torch.device, server_device: torch.device | None = None) -> ParameterStore:
    """What a worker pushes to: the one server, or the S shards behind one ShardedParameterStore."""
    if shards == 1:
        return RemoteParameterStore(device, server_device)
    return ShardedParameterStore([RemoteParameterStore(device, server_device, shard_name(k)) for k in range(shards)])


class RemoteParameterStore:
    """One parameter server seen from a worker. One round trip per push: the reply carries the weights."""

    def __init__(self, device: torch.device, server_device: torch.device | None = None, name: str = SERVER) -> None:
        self.device = device
        self.name = name
        # Without a device map both ends must talk in CPU tensors.
        self._via_cpu = device.type != "cpu" and (server_device is None or server_device.type == "cpu")

    def pull(self, rank: int | None = None) -> PushReply:
        return rpc.rpc_sync(self.name, _pull, args=(rank,))

    def push(self, request: PushRequest) -> PushReply:
        return rpc.rpc_sync(self.name, _push, args=(self._wire(request),))

    def push_async(self, request: PushRequest) -> torch.futures.Future[PushReply]:
        return rpc.rpc_async(self.name, _push, args=(self._wire(request),))

    def _wire(self, request: PushRequest) -> PushRequest:
        if self._via_cpu:
            request.grads = request.grads.cpu()
        return request


def init(rank: int, world_size: int, cfg: RpcConfig, device_map: dict | None = None, shards: int = 1) -> None:
    """Join the RPC group as a server shard (ranks below `shards`) or `worker<rank>`.

    Rendezvous reuses torchrun's store (env://) unless `rpc.port` asks for a TCP store of its own.
    """
    ifname = (
        cfg.socket_ifname
        or os.environ.get("TP_SOCKET_IFNAME")
        or interface_for(os.environ.get("MASTER_ADDR", "127.0.0.1"))
    )
    if ifname:
        os.environ["TP_SOCKET_IFNAME"] = ifname
    init_method = "env://"
    if cfg.port is not None:
        init_method = f"tcp://{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{cfg.port}"
    options = rpc.TensorPipeRpcBackendOptions(
        num_worker_threads=cfg.num_threads,
        rpc_timeout=cfg.timeout_s,
        init_method=init_method,
        _transports=list(cfg.transports),
    )
    if device_map:
        for k in range(shards):
            options.set_device_map(shard_name(k), device_map)
    # init_rpc's internal all-gather trips a deprecation warning inside torch itself; it is not ours to fix.
    warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
    name = rank_name(rank, shards)
    rpc.init_rpc(name, rank=rank, world_size=world_size, rpc_backend_options=options)
    log.debug("rank %d joined RPC as %s (interface %s)", rank, name, ifname)


def shutdown(graceful: bool = True, timeout_s: float = 30.0) -> None:
    """Stop the agent; graceful: first wait for every rank to finish its outstanding calls."""
    try:
        rpc.shutdown(graceful=graceful, timeout=timeout_s)
    except torch.distributed.DistNetworkError as e:
        if _server is not None:
            raise
        # When rank 0 hosts the rendezvous store (rpc.port set, or env:// outside torchrun), it can pass the
        # final shutdown barrier and take the store down while a worker still reads the barrier's last key.
        # This worker's work is done and torch has already stopped its agent; a server that failed says so
        # in its own exit status.
        log.debug("rendezvous store closed during shutdown (rank 0 left first): %s", e)
