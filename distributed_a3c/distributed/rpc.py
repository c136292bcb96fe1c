"""RPC edge: start/stop the agent, expose the server's push/pull, and a remote ParameterStore.

Rank k < server.shards hosts parameter-server shard k (named `server`, `server1`, ...); the other
ranks are workers (`worker<rank>`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable

import torch
import torch.distributed.rpc as rpc

from distributed_a3c.config import RpcConfig
from distributed_a3c.distributed import rendezvous
from distributed_a3c.distributed.netif import interface_for
from distributed_a3c.messages import ActionReply, ExperiencePush, GradientPush, WeightsReply
from distributed_a3c.server import BatchingPredictor, ParameterServer
from distributed_a3c.server.aggregator import NodeAggregator
from distributed_a3c.server.placement import Layout, plan

log = logging.getLogger(__name__)

SERVER = "server"

_server: ParameterServer | None = None  # set on the server rank only
_predictor: BatchingPredictor | None = None  # mode=central, on the lead
_expected_pushes: Callable[[], int] | None = None  # mode=sync, on the lead: how many workers a step waits for
_on_goodbye: Callable[[int], None] | None = None  # set on the lead: a worker that was told to stop has left
_heard_from: Callable[[int], None] | None = None  # set on the lead: a worker pushed or pulled
_released = threading.Event()  # set on a non-lead shard when the lead no longer needs it
_layout: Layout | None = None  # which ranks serve, aggregate and work (set by init)
_aggregator: NodeAggregator | None = None  # server.node_aggregate, on a node's aggregator


class PeerLost(RuntimeError):
    """A rank this one depends on is gone (its process or node died); the message is one line."""


def shard_name(shard: int) -> str:
    return SERVER if shard == 0 else f"{SERVER}{shard}"


def rank_name(rank: int, layout: Layout | None = None) -> str:
    """The RPC name of global rank `rank`: `server`, `server<k>` (shard k), `agg<rank>`, `worker<rank>`."""
    layout = layout or _layout
    if layout is None:
        raise RuntimeError("rank_name before init: the job's layout is not known yet")
    if rank in layout.shard_ranks:
        return shard_name(layout.shard_index(rank))
    return f"agg{rank}" if layout.role(rank) == "aggregator" else f"worker{rank}"


def layout() -> Layout:
    """The job's layout, as `init` was given it."""
    if _layout is None:
        raise RuntimeError("the job's layout is not known before init")
    return _layout


def serve(
    server: ParameterServer,
    expected_pushes: Callable[[], int] | None = None,
    predictor: BatchingPredictor | None = None,
) -> None:
    """Make `server` the target of incoming push/pull calls on this rank; mode=sync: `expected_pushes()`
    says how many living workers each step waits for; mode=central: `predictor` answers `act` calls."""
    global _server, _expected_pushes, _predictor
    _server = server
    if expected_pushes is not None:
        _expected_pushes = expected_pushes
    _predictor = predictor


@rpc.functions.async_execution
def _act(rank: int, obs: torch.Tensor) -> torch.futures.Future[ActionReply]:
    """mode=central: answered by the predictor's next forward pass, without holding an RPC thread."""
    assert _predictor is not None, "act reached a rank that hosts no predictor (mode=central only)"
    return _predictor.predict(rank, obs)


def serve_aggregator(aggregator: NodeAggregator) -> None:
    """Make `aggregator` the target of this node's workers' pushes and pulls (server.node_aggregate)."""
    global _aggregator
    _aggregator = aggregator


@rpc.functions.async_execution
def _agg_push(request: GradientPush) -> torch.futures.Future[WeightsReply]:
    """A local worker's push, answered when its window's forward has its reply (no RPC thread held)."""
    assert _aggregator is not None, "push reached a rank that hosts no aggregator"
    return _aggregator.push_async(request)


def _agg_pull(rank: int | None) -> WeightsReply:
    assert _aggregator is not None, "pull reached a rank that hosts no aggregator"
    return _aggregator.pull(rank)


def on_heard_from(callback: Callable[[int], None]) -> None:
    """On the lead: call `callback(rank)` with the rank of every push and pull (a lost worker that is back)."""
    global _heard_from
    _heard_from = callback


def _heard(rank: object) -> None:
    if _heard_from is not None and isinstance(rank, int):
        _heard_from(rank)


def _push(request: GradientPush | ExperiencePush) -> WeightsReply:
    assert _server is not None, "push reached a rank that hosts no parameter server"
    _heard(getattr(request, "rank", None))
    return _server.push(request)


@rpc.functions.async_execution
def _push_synchronous(request: GradientPush) -> torch.futures.Future[WeightsReply]:
    """mode=sync: answered when the step of this weight version is done, without holding an RPC thread."""
    assert _server is not None, "push reached a rank that hosts no parameter server"
    _heard(getattr(request, "rank", None))
    return _server.push_synchronous(request, _expected_pushes() if _expected_pushes is not None else 1)


def _pull(rank: int | None) -> WeightsReply:
    assert _server is not None, "pull reached a rank that hosts no parameter server"
    _heard(rank)
    return _server.pull(rank)


def on_goodbye(callback: Callable[[int], None]) -> None:
    """On a server shard: call `callback(rank)` when a worker says it is leaving (after its stop reply)."""
    global _on_goodbye
    _on_goodbye = callback


def _goodbye(rank: int) -> None:
    if _on_goodbye is not None:
        _on_goodbye(rank)


def _ping() -> bool:
    return True


def _release() -> None:
    _released.set()


def ping(rank: int, timeout_s: float) -> str | None:
    """None if rank `rank` answers within `timeout_s`, else why not (one line)."""
    try:
        rpc.rpc_sync(rank_name(rank), _ping, timeout=timeout_s)
    except Exception as e:
        return _first_line(e)
    return None


def ping_async(rank: int, timeout_s: float) -> torch.futures.Future:
    """A future that completes (with an error if `rank` is gone) when the rank answers."""
    return rpc.rpc_async(rank_name(rank), _ping, timeout=timeout_s)


def upstream_ranks(rank: int) -> list[int]:
    """Whom rank `rank` pushes to: its node's aggregator, or every server shard."""
    lay = layout()
    return [lay.aggregator_of[rank]] if rank in lay.aggregator_of else list(lay.shard_ranks)


def say_goodbye(rank: int, timeout_s: float = 5.0) -> None:
    """From a worker or aggregator told to stop: tell its upstream it is leaving; it may be gone already."""
    futures = [rpc.rpc_async(rank_name(up), _goodbye, args=(rank,), timeout=timeout_s) for up in upstream_ranks(rank)]
    for f in futures:
        try:
            f.wait()
        except Exception as e:
            log.debug("goodbye to a server shard failed (it may have left first): %s", e)


def release_shards(shards: int, timeout_s: float = 5.0) -> None:
    """From the lead, at the end: the other shards may exit."""
    futures = [rpc.rpc_async(shard_name(k), _release, timeout=timeout_s) for k in range(1, shards)]
    for k, f in enumerate(futures, start=1):
        try:
            f.wait()
        except Exception as e:
            log.warning("could not release parameter-server shard %d: %s", k, _first_line(e))


def wait_gone(ranks: list[int], timeout_s: float = 10.0, ping_s: float = 0.5) -> list[int]:
    """Block until none of `ranks` answers a ping (their RPC agents are down) or `timeout_s` passes; the
    ranks still answering then."""
    deadline = time.monotonic() + timeout_s
    left = list(ranks)
    while left and time.monotonic() < deadline:
        futures = [(r, ping_async(r, ping_s)) for r in left]
        answered = []
        for r, f in futures:
            try:
                f.wait()
                answered.append(r)
            except Exception:  # refused, reset or timed out: gone
                pass
        left = answered
        if left:
            time.sleep(0.1)
    return left


def wait_released(lead_lost: Callable[[], str | None], poll_s: float = 1.0) -> str | None:
    """On a non-lead shard: block until the lead releases it (None) or `lead_lost()` says why it cannot."""
    while not _released.wait(poll_s):
        reason = lead_lost()
        if reason is not None:
            return reason
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


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


def store_url(cfg: RpcConfig) -> str:
    """torchrun's store (env://), or with `rpc.port` a TCP store of the job's own on MASTER_ADDR."""
    if cfg.port is None:
        return "env://"
    return f"tcp://{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{cfg.port}"


def init(
    rank: int, world_size: int, cfg: RpcConfig, device_map: dict | None = None, layout: Layout | None = None
) -> None:
    """Join the RPC group as a server shard (ranks below `shards`) or `worker<rank>`.

    Rendezvous reuses torchrun's store (env://) unless `rpc.port` asks for a TCP store of its own.
    """
    ifname = (
        cfg.socket_ifname
        or os.environ.get("TP_SOCKET_IFNAME")
        or interface_for(os.environ.get("MASTER_ADDR", "127.0.0.1"))
    )
    if ifname:
        # TensorPipe and the gloo group inside init_rpc each pick an address of their own; gloo's default
        # is the hostname's, which is loopback on many hosts and unreachable from another node.
        os.environ["TP_SOCKET_IFNAME"] = ifname
        if cfg.socket_ifname or "GLOO_SOCKET_IFNAME" not in os.environ:
            os.environ["GLOO_SOCKET_IFNAME"] = ifname
    rendezvous.attempt_store(rank, world_size, cfg.timeout_s, store_url(cfg))
    options = rpc.TensorPipeRpcBackendOptions(
        num_worker_threads=cfg.num_threads,
        rpc_timeout=cfg.timeout_s,
        init_method=rendezvous.init_method(),
        _transports=list(cfg.transports),
        _channels=None if cfg.channels is None else list(cfg.channels),
    )
    global _layout
    _layout = layout or plan(world_size, 1)
    if device_map:
        for k in range(_layout.shards):
            options.set_device_map(shard_name(k), device_map)
    # init_rpc's internal all-gather trips a deprecation warning inside torch itself; it is not ours to fix.
    warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
    name = rank_name(rank)
    rpc.init_rpc(name, rank=rank, world_size=world_size, rpc_backend_options=options)
    rendezvous.learn_hosts(world_size)
    _quiet_transport_warnings()
    log.debug("rank %d joined RPC as %s (interface %s)", rank, name, ifname)


def _quiet_transport_warnings() -> None:
    """Hide torch's C++ warnings (TensorPipe says "EOF"/"pipe closed" each time a peer leaves or dies).

    The job itself says, in one line, which rank it lost; a user who sets TORCH_CPP_LOG_LEVEL keeps them.
    The level is read once at torch's start, and ranks are forked after it: set the flag behind it.
    """
    if "TORCH_CPP_LOG_LEVEL" in os.environ:
        return
    try:
        libc10 = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
        for flag in ("FLAGS_caffe2_log_level", "FLAGS_minloglevel"):
            ctypes.c_int.in_dll(libc10, flag).value = 2  # ERROR
    except (OSError, ValueError) as e:  # another platform or build: the warnings stay
        log.debug("could not quiet torch's C++ warnings: %s", e)


def shutdown() -> None:
    """Stop this rank's agent without waiting for the others.

    torch's graceful shutdown is a barrier over every rank, so one dead rank holds up all the living. The
    job ends in its own order instead: workers leave once told to stop (saying goodbye), the lead waits
    for the living ones, then releases the other shards.
    """
    rpc.shutdown(graceful=False)
