"""A node's aggregator in process: it forwards the sum of its workers' gradients in one push, answers each
worker with the server's fresh weights, rejects a bad push without forwarding it, and a window closes on
time when a worker is slow or gone. Placement: which ranks serve, aggregate and work."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from distributed_a3c.config import OptimConfig, ServerConfig, TrainConfig
from distributed_a3c.messages import GradientPush
from distributed_a3c.server import ParameterServer
from distributed_a3c.server.aggregator import NodeAggregator
from distributed_a3c.server.placement import PlacementError, plan

NO_STOP = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None)


def _server() -> ParameterServer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    return ParameterServer(model, OptimConfig(name="rmsprop", lr=0.01), ServerConfig(accumulate=1), NO_STOP)


def _push_all(agg: NodeAggregator, pushes: list[GradientPush]) -> list:
    futures = [agg.push_async(p) for p in pushes]
    return [f.wait() for f in futures]


def test_the_aggregator_forwards_the_sum_of_its_workers_gradients_once() -> None:
    server, reference = _server(), _server()
    agg = NodeAggregator(10, server, [11, 12, 13], server.num_params, 160, window_s=5.0)
    first = agg.pull(11)
    assert first.version == 0 and torch.equal(first.weights, server.flat.weights)
    grads = [torch.randn(server.num_params, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    pushes = [GradientPush(11 + i, 0, g, 160, episode_returns=[float(i)]) for i, g in enumerate(grads)]
    replies = _push_all(agg, pushes)
    reference.push(GradientPush(1, 0, torch.stack(grads).sum(0), 480))
    assert server.version == 1 and agg.forwarded == 1
    torch.testing.assert_close(server.flat.weights, reference.flat.weights)
    assert all(
        r.version == 1 and r.status == "applied" and torch.equal(r.weights, server.flat.weights) for r in replies
    )
    assert server.stats.env_steps == 480 and sorted(server.stats.returns) == [0.0, 1.0, 2.0]
    assert server.stats.pushes_by_rank == {10: 1}  # the server sees the aggregator only


def test_a_bad_push_is_rejected_at_the_aggregator_and_never_forwarded() -> None:
    server = _server()
    agg = NodeAggregator(10, server, [11, 12], server.num_params, 160, window_s=5.0)
    agg.pull(11)
    bad = agg.push_async(GradientPush(11, 0, torch.full((server.num_params,), float("nan")), 160)).wait()
    stranger = agg.push_async(GradientPush(99, 0, torch.zeros(server.num_params), 160)).wait()
    assert bad.status == stranger.status == "rejected" and agg.rejected == 2
    assert server.version == 0 and server.rejected == 0 and agg.forwarded == 0
    replies = _push_all(agg, [GradientPush(r, 0, torch.ones(server.num_params), 160) for r in (11, 12)])
    assert [r.status for r in replies] == ["applied", "applied"] and server.version == 1


def test_a_window_closes_on_time_without_a_slow_worker_and_at_once_without_a_lost_one() -> None:
    server = _server()
    agg = NodeAggregator(10, server, [11, 12], server.num_params, 160, window_s=0.2)
    agg.pull(11)
    t0 = time.monotonic()
    reply = agg.push_async(GradientPush(11, 0, torch.ones(server.num_params), 160)).wait()
    assert 0.15 <= time.monotonic() - t0 < 3.0 and reply.status == "applied" and server.version == 1
    agg.lose(12)
    t0 = time.monotonic()
    agg.push_async(GradientPush(11, 1, torch.ones(server.num_params), 160)).wait()
    assert time.monotonic() - t0 < 0.15 and server.version == 2


def test_pushes_during_a_forward_make_the_next_window() -> None:
    server = _server()
    step = server._step
    gate = threading.Event()

    def slow_step(grads, pushes=1, staleness_factor=1.0):
        gate.wait(5)
        step(grads, pushes, staleness_factor)

    server._step = slow_step
    agg = NodeAggregator(10, server, [11, 12], server.num_params, 160, window_s=0.05)
    agg.pull(11)
    first = [agg.push_async(GradientPush(r, 0, torch.ones(server.num_params), 160)) for r in (11, 12)]
    time.sleep(0.1)
    assert not any(f.done() for f in first)
    gate.set()
    assert [f.wait().version for f in first] == [1, 1] and agg.forwarded == 1


def test_the_layout_of_packed_spread_and_aggregated_jobs() -> None:
    packed = plan(8, 2, "packed", local_world_size=4, nodes=2)
    assert packed.shard_ranks == (0, 1) and packed.pushers == [2, 3, 4, 5, 6, 7]
    spread = plan(8, 2, "spread", local_world_size=4, nodes=2)
    assert spread.shard_ranks == (0, 4) and spread.workers == [1, 2, 3, 5, 6, 7]
    assert plan(8, 2, "auto", local_world_size=4, nodes=2).shard_ranks == (0, 4)
    assert plan(8, 2, "auto", local_world_size=8, nodes=1).shard_ranks == (0, 1)
    both = plan(8, 2, "spread", node_aggregate=True, local_world_size=4, nodes=2)
    assert both.aggregators == [1, 5] and both.local_workers(5) == [6, 7] and both.pushers == [1, 5]
    assert both.role(4) == "shard" and both.role(5) == "aggregator" and both.role(6) == "worker"
    assert both.pushes_per_forward() == 2
    one_node = plan(3, 1, node_aggregate=True)
    assert one_node.aggregator_of == {2: 1} and one_node.pushers == [1]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((8, 3, "spread", False, 4, 2), "server.placement=spread is invalid with server.shards=3: one shard per node"),
        ((7, 2, "spread", False, 4, 2), "needs the same --nproc-per-node on every node"),
        ((8, 1, "round-robin", False, 4, 2), "server.placement='round-robin' is invalid"),
        ((1, 1, "packed", True, 1, 1), "need 1 server rank(s)"),
    ],
)
def test_layouts_the_nodes_cannot_take_are_one_line(args: tuple, says: str) -> None:
    with pytest.raises(PlacementError, match=says.replace("(", r"\(").replace(")", r"\)")):
        plan(*args)
