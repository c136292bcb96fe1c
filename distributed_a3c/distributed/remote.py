"""The server seen from a worker (or a node's aggregator): a remote ParameterStore, one round trip per push."""

from __future__ import annotations

import torch
import torch.distributed.rpc as rpc

from distributed_a3c.distributed import rendezvous
from distributed_a3c.distributed.rpc import (
    PeerLost,
    _act,
    _agg_pull,
    _agg_push,
    _first_line,
    _pull,
    _push,
    _push_synchronous,
    rank_name,
    shard_name,
)
from distributed_a3c.messages import ActionReply, ExperiencePush, GradientPush, ParameterStore, WeightsReply
from distributed_a3c.server import ShardedParameterStore
from distributed_a3c.server.placement import Layout


def remote_store(
    layout: Layout,
    rank: int,
    device: torch.device,
    server_device: torch.device | None = None,
    synchronous: bool = False,
) -> ParameterStore:
    """What rank `rank` pushes to: its node's aggregator, the one server, or the S shards behind one
    ShardedParameterStore."""
    if rank in layout.aggregator_of:
        agg = layout.aggregator_of[rank]
        return RemoteParameterStore(device, None, rank_name(agg, layout), agg, aggregator=True)
    stores = [
        RemoteParameterStore(device, server_device, shard_name(k), peer, synchronous=synchronous)
        for k, peer in enumerate(layout.shard_ranks)
    ]
    return stores[0] if len(stores) == 1 else ShardedParameterStore(stores)


class RemoteParameterStore:
    """One parameter server seen from a worker. One round trip per push: the reply carries the weights.

    A call that fails (the server's process or node is gone, or it did not answer within `rpc.timeout_s`)
    raises PeerLost naming the server's rank and host.
    """

    def __init__(
        self,
        device: torch.device,
        server_device: torch.device | None = None,
        name: str = "server",
        peer: int = 0,
        synchronous: bool = False,
        aggregator: bool = False,
    ) -> None:
        self.device = device
        self.name = name
        self.peer = peer
        """The global rank behind `name` (for messages)."""
        self.aggregator = aggregator
        self._push_fn = _agg_push if aggregator else _push_synchronous if synchronous else _push
        self._pull_fn = _agg_pull if aggregator else _pull
        # Without a device map both ends must talk in CPU tensors.
        self._via_cpu = device.type != "cpu" and (server_device is None or server_device.type == "cpu")

    def pull(self, rank: int | None = None) -> WeightsReply:
        try:
            return rpc.rpc_sync(self.name, self._pull_fn, args=(rank,))
        except Exception as e:
            raise self._lost(e) from None

    def act(self, rank: int, obs: torch.Tensor) -> ActionReply:
        """mode=central: the server's predictor chooses actions for these observations."""
        try:
            return rpc.rpc_sync(self.name, _act, args=(rank, obs.cpu() if self._via_cpu else obs))
        except Exception as e:
            raise self._lost(e) from None

    def push(self, request: GradientPush | ExperiencePush) -> WeightsReply:
        try:
            return rpc.rpc_sync(self.name, self._push_fn, args=(self._wire(request),))
        except Exception as e:
            raise self._lost(e) from None

    def push_async(self, request: GradientPush | ExperiencePush) -> torch.futures.Future[WeightsReply]:
        def unwrap(future: torch.futures.Future[WeightsReply]) -> WeightsReply:
            try:
                return future.value()
            except Exception as e:
                raise self._lost(e) from None

        return rpc.rpc_async(self.name, self._push_fn, args=(self._wire(request),)).then(unwrap)

    def _lost(self, e: BaseException) -> PeerLost:
        what = peer_words(self.name)
        return PeerLost(f"lost {what} (rank {self.peer} on {rendezvous.host_of(self.peer)}): {_first_line(e)}")

    def _wire(self, request: GradientPush | ExperiencePush) -> GradientPush | ExperiencePush:
        if self._via_cpu and isinstance(request, GradientPush):  # experience is sent from the CPU already
            request.grads = request.grads.cpu()
        return request


def peer_words(name: str) -> str:
    """How a message names the peer called `name`."""
    if name == "server":
        return "the parameter server"
    if name.startswith("agg"):
        return "the node's aggregator"
    return f"parameter-server shard {name.removeprefix('server')}"
