"""RPC edge: start/stop the agent, expose the server's push/pull, and a remote ParameterStore."""

from __future__ import annotations

import logging
import os
import warnings

import torch
import torch.distributed.rpc as rpc

from distributed_a3c.config import RpcConfig
from distributed_a3c.distributed.netif import interface_for
from distributed_a3c.messages import PushReply, PushRequest
from distributed_a3c.server import ParameterServer

log = logging.getLogger(__name__)

SERVER = "server"

_server: ParameterServer | None = None  # set on the server rank only


def rank_name(rank: int) -> str:
    return SERVER if rank == 0 else f"worker{rank}"


def serve(server: ParameterServer) -> None:
    """Make `server` the target of incoming push/pull calls on this rank."""
    global _server
    _server = server


def _push(request: PushRequest) -> PushReply:
    assert _server is not None, "push reached a rank that hosts no parameter server"
    return _server.push(request)


def _pull() -> PushReply:
    assert _server is not None, "pull reached a rank that hosts no parameter server"
    return _server.pull()


class RemoteParameterStore:
    """The server on rank 0, seen from a worker. One round trip per push: the reply carries the weights."""

    def __init__(self, device: torch.device, server_device: torch.device | None = None) -> None:
        self.device = device
        # Without a device map both ends must talk in CPU tensors.
        self._via_cpu = device.type != "cpu" and (server_device is None or server_device.type == "cpu")

    def pull(self) -> PushReply:
        return rpc.rpc_sync(SERVER, _pull)

    def push(self, request: PushRequest) -> PushReply:
        return rpc.rpc_sync(SERVER, _push, args=(self._wire(request),))

    def push_async(self, request: PushRequest) -> torch.futures.Future[PushReply]:
        return rpc.rpc_async(SERVER, _push, args=(self._wire(request),))

    def _wire(self, request: PushRequest) -> PushRequest:
        if self._via_cpu:
            request.grads = request.grads.cpu()
        return request


def init(rank: int, world_size: int, cfg: RpcConfig, device_map: dict | None = None) -> None:
    """Join the RPC group as `server` (rank 0) or `worker<rank>`.

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
        _transports=["uv"],
    )
    if device_map:
        options.set_device_map(SERVER, device_map)
    # init_rpc's internal all-gather trips a deprecation warning inside torch itself; it is not ours to fix.
    warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
    rpc.init_rpc(rank_name(rank), rank=rank, world_size=world_size, rpc_backend_options=options)
    log.debug("rank %d joined RPC as %s (interface %s)", rank, rank_name(rank), ifname)


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
