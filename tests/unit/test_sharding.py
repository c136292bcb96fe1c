"""server.shards in-process: S shards fed the same pushes apply exactly the updates of one server."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distributed_a3c.config import (
    Config,
    EnvConfig,
    OptimConfig,
    ServerConfig,
    TrainConfig,
    WorkerConfig,
    config_errors,
)
from distributed_a3c.messages import GradientPush
from distributed_a3c.server import ParameterServer
from distributed_a3c.server.placement import plan
from distributed_a3c.server.sharding import (
    ShardedParameterStore,
    merge_optimizer_states,
    shard_bounds,
    slice_optimizer_state,
)
from distributed_a3c.worker import Worker

NO_STOP = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None)
OPTIMS = {
    "adam": OptimConfig(name="adam", lr=0.01, eps=1e-5),
    "rmsprop": OptimConfig(name="rmsprop", lr=0.01, eps=1e-5, alpha=0.99),
}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))  # 67 parameters: uneven shards


def _servers(shards: int, optim: OptimConfig, train: TrainConfig = NO_STOP, **kw) -> list[ParameterServer]:
    cfg = ServerConfig(shards=shards, **kw)
    return [ParameterServer(_model(), optim, cfg, train, shard=k) for k in range(shards)]


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit for bit: the optimizer's update is elementwise, so a slice's update is the same slice of the whole."""
    assert torch.equal(a, b)


def _assembled(shards: list[ParameterServer]) -> torch.Tensor:
    """The whole weight vector: each shard's own slice."""
    return torch.cat([s.flat.weights[lo:hi] for s, (lo, hi) in zip(shards, shards[0].bounds, strict=True)])


@pytest.mark.parametrize(("numel", "shards"), [(67, 1), (67, 2), (67, 3), (10, 4), (5, 5)])
def test_shard_bounds_are_contiguous_cover_everything_and_are_balanced(numel, shards):
    bounds = shard_bounds(numel, shards)
    assert len(bounds) == shards and bounds[0][0] == 0 and bounds[-1][1] == numel
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:], strict=False))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("optim", ["adam", "rmsprop"])
@pytest.mark.parametrize(("shards", "accumulate"), [(2, 1), (3, 1), (3, 2)])
def test_sharded_and_unsharded_servers_apply_identical_updates_to_identical_pushes(optim, shards, accumulate):
    (single,) = _servers(1, OPTIMS[optim], accumulate=accumulate, max_staleness=2)
    sharded = _servers(shards, OPTIMS[optim], accumulate=accumulate, max_staleness=2)
    store = ShardedParameterStore(sharded)
    assert torch.equal(store.pull().weights, single.pull().weights)
    gen = torch.Generator().manual_seed(1)
    # Two workers on stale weights; a version that is too stale is dropped by both alike.
    versions = {1: (0, [0] * shards), 2: (0, [0] * shards)}
    for i in range(12):
        rank = 1 + i % 2
        if i == 7:
            versions[rank] = (single.version - 3, [s.version - 3 for s in sharded])  # beyond max_staleness
        grads = torch.randn(single.num_params, generator=gen)
        version, shard_versions = versions[rank]
        a = single.push(GradientPush(rank, version, grads.clone(), env_steps=10, episode_returns=[float(i)]))
        b = store.push(GradientPush(rank, version, grads.clone(), 10, [float(i)], shard_versions=shard_versions))
        assert (b.status, b.version, b.stop) == (a.status, a.version, a.stop)
        assert b.shard_versions == [a.version] * shards
        _same(_assembled(sharded), single.flat.weights)
        if b.weights is not None:
            _same(b.weights, single.flat.weights)
        versions[rank] = (b.version, b.shard_versions)
    assert single.dropped == sharded[0].dropped == 1
    # The lead shard keeps the run's statistics; the others only their slice.
    assert sharded[0].stats.env_steps == single.stats.env_steps == 120 and list(sharded[0].stats.returns) == list(
        single.stats.returns
    )
    assert all(s.stats is None for s in sharded[1:])  # only the lead keeps the run's statistics


@pytest.mark.parametrize("optim", ["adam", "rmsprop"])
def test_the_lead_checkpoints_the_whole_run_in_the_unsharded_format_and_any_shard_count_resumes(optim):
    (single,) = _servers(1, OPTIMS[optim])
    sharded = _servers(3, OPTIMS[optim])
    store = ShardedParameterStore(sharded)
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        grads = torch.randn(single.num_params, generator=gen)
        single.push(GradientPush(1, single.version, grads.clone(), 10))
        store.push(GradientPush(1, sharded[0].version, grads.clone(), 10, shard_versions=[s.version for s in sharded]))
    expected = single.state_dict()
    got = sharded[0].state_dict([s.shard_state() for s in sharded[1:]])
    assert got["model"].keys() == expected["model"].keys()
    for k in expected["model"]:
        _same(got["model"][k], expected["model"][k])
    for k, v in expected["optimizer"]["state"][0].items():
        _same(got["optimizer"]["state"][0][k], v)
    assert got["version"] == expected["version"] == 5
    with pytest.raises(ValueError, match="states of 2 other shards"):
        sharded[0].state_dict()

    # Resume the 3-shard checkpoint unsharded and with 2 shards: the next pushes agree with the original.
    (resumed_single,) = _servers(1, OPTIMS[optim])
    resumed_single.load_state_dict(got)
    resumed_sharded = _servers(2, OPTIMS[optim])
    for s in resumed_sharded:
        s.load_state_dict(got)
    store2 = ShardedParameterStore(resumed_sharded)
    for _ in range(3):
        grads = torch.randn(single.num_params, generator=gen)
        single.push(GradientPush(1, single.version, grads.clone(), 10))
        resumed_single.push(GradientPush(1, resumed_single.version, grads.clone(), 10))
        reply = store2.push(GradientPush(1, resumed_sharded[0].version, grads.clone(), 10))
    _same(resumed_single.flat.weights, single.flat.weights)
    _same(store2.pull().weights, single.flat.weights)
    assert reply.version == single.version == 8


def test_a_shard_takes_only_gradients_of_its_slice_and_never_stops_on_its_own():
    train = TrainConfig(total_env_steps=10, target_return=None, max_minutes=None)
    lead, other = _servers(2, OPTIMS["adam"], train)
    assert (lead.shard_numel, other.shard_numel) == (33, 34)
    reply = other.push(GradientPush(1, 0, torch.zeros(67), env_steps=100))
    assert reply.status == "rejected" and other.rejected == 1
    other.push(GradientPush(1, 0, torch.zeros(34), env_steps=100))
    assert other.poll_stop() is None  # the lead counts env steps and decides
    assert lead.push(GradientPush(1, 0, torch.zeros(33), env_steps=100)).stop
    other.request_stop("stopped by the lead shard")
    assert other.push(GradientPush(1, 1, torch.ones(34), env_steps=0)).status == "stopped"


def test_optimizer_states_merge_and_slice_back():
    lead, other = _servers(2, OPTIMS["adam"])
    lead.push(GradientPush(1, 0, torch.ones(33), 10))  # only the lead has stepped: the other contributes zeros
    merged = merge_optimizer_states([lead.optimizer.state_dict(), other.optimizer.state_dict()], [33, 34])
    state = merged["state"][0]
    assert state["exp_avg"].shape == (67,) and bool((state["exp_avg"][:33] > 0).all())
    assert bool((state["exp_avg"][33:] == 0).all()) and float(state["step"]) == 1.0
    back = slice_optimizer_state(merged, 0, 33)["state"][0]
    assert torch.equal(back["exp_avg"], lead.optimizer.state_dict()["state"][0]["exp_avg"])
    empty = merge_optimizer_states([other.optimizer.state_dict()] * 2, [34, 34])
    assert empty["state"] == {} and slice_optimizer_state(empty, 0, 5)["state"] == {}


def test_a_worker_trains_against_sharded_servers_and_holds_their_assembled_weights():
    cfg = Config(
        env=EnvConfig(id="CartPole-v1", vectorization="sync"),
        worker=WorkerConfig(envs_per_worker=4, rollout_len=5),
        server=ServerConfig(shards=2),
        train=NO_STOP,
    )
    from distributed_a3c.models import build_model

    servers = []
    for k in range(2):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, *_cartpole_spaces())
        servers.append(ParameterServer(model, cfg.optim, cfg.server, cfg.train, shard=k))
    worker = Worker(cfg, 2, ShardedParameterStore(servers))
    worker._apply(worker.store.pull())
    for _ in range(4):
        reply = worker.step()
        assert reply.status == "applied"
    assert [s.version for s in servers] == [4, 4] and worker.shard_versions == [4, 4]
    assert torch.equal(worker.flat.weights, _assembled(servers))
    assert servers[0].stats.env_steps == 80 and servers[1].stats is None


def _cartpole_spaces():
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def test_config_rejects_zero_shards():
    assert "server.shards=0 is invalid: must be >= 1" in config_errors(Config(server=ServerConfig(shards=0)))
    with pytest.raises(ValueError, match=r"shard=2 is invalid: must be in \[0, 2\)"):
        ParameterServer(_model(), OPTIMS["adam"], ServerConfig(shards=2), NO_STOP, shard=2)


@pytest.mark.parametrize("optim", ["adam", "rmsprop"])
def test_spread_shards_apply_the_same_updates_as_packed_ones(optim):
    """3 nodes of 3 ranks, 3 shards: packed puts them on ranks 0-2 (node 0), spread on ranks 0, 3, 6 (one
    a node). The i-th worker of either job pushing the same gradients must leave the same weights."""
    weights = {}
    for placement in ("packed", "spread"):
        layout = plan(9, 3, placement, local_world_size=3, nodes=3)
        # As the job builds them: rank r serves shard layout.shard_index(r) (distributed/roles.py), and a
        # worker reaches shard k at rank layout.shard_ranks[k] (distributed/remote.py).
        cfg = ServerConfig(shards=3)
        servers = {
            r: ParameterServer(_model(), OPTIMS[optim], cfg, NO_STOP, shard=layout.shard_index(r))
            for r in layout.shard_ranks
        }
        assert servers[0].shard == 0  # the lead is rank 0 either way
        stores = {w: ShardedParameterStore([servers[r] for r in layout.shard_ranks]) for w in layout.workers}
        held = {w: (0, [0, 0, 0]) for w in layout.workers}
        gen = torch.Generator().manual_seed(2)
        for i in range(10):
            worker = layout.workers[i % len(layout.workers)]
            version, shard_versions = held[worker]
            grads = torch.randn(servers[0].num_params, generator=gen)
            reply = stores[worker].push(GradientPush(worker, version, grads, 10, [], shard_versions=shard_versions))
            held[worker] = (reply.version, reply.shard_versions)
        weights[placement] = _assembled([servers[r] for r in layout.shard_ranks])
    assert layout.shard_ranks == (0, 3, 6)
    _same(weights["spread"], weights["packed"])
