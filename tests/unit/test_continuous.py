"""Continuous actions and running statistics: the Gaussian head, clipping, the Chan et al. merge, reward
scaling, and observation statistics shared through the parameter server (and its checkpoint)."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from distributed_a3c.checkpoint import load_checkpoint, save_checkpoint
from distributed_a3c.config import Config, OptimConfig, ServerConfig, TrainConfig
from distributed_a3c.messages import GradientPush
from distributed_a3c.models import MLPActorCritic, action_to_env, build_model
from distributed_a3c.rl.normalize import OBS_CLIP, RewardScaler, RunningMeanStd, merge_moments
from distributed_a3c.server import ParameterServer
from distributed_a3c.worker import Worker

NO_STOP = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None)
BOX3 = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT2 = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)


def _gaussian_policy(log_std: list[float]) -> MLPActorCritic:
    torch.manual_seed(0)
    model = MLPActorCritic(BOX3, ACT2, [16])
    with torch.no_grad():
        model.log_std.copy_(torch.tensor(log_std))
    return model


# ----- the Gaussian head ----------------------------------------------------------------------------------


def test_gaussian_log_prob_and_entropy_match_torch_normal():
    model = _gaussian_policy([-0.5, 0.3])
    mean, _ = model(torch.randn(5, 3))
    actions = torch.randn(5, 2) * 3
    dist = model.distribution(mean)
    reference = Normal(mean, torch.tensor([-0.5, 0.3]).exp())
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions).sum(-1))
    torch.testing.assert_close(dist.entropy(), reference.entropy().sum(-1))
    # Closed form: entropy of a diagonal Gaussian is sum(log_std) + d/2 * log(2 pi e), whatever the mean.
    torch.testing.assert_close(dist.entropy(), torch.full((5,), -0.2 + math.log(2 * math.pi * math.e)))


def test_log_std_is_state_independent_and_gets_a_gradient():
    model = _gaussian_policy([0.0, 0.0])
    mean, _ = model(torch.randn(7, 3))
    assert model.distribution(mean).base_dist.scale.unique().numel() == 1
    model.distribution(mean).entropy().sum().backward()
    torch.testing.assert_close(model.log_std.grad, torch.full((2,), 7.0))


def test_samples_have_the_policy_mean_and_std():
    model = _gaussian_policy([math.log(0.5), math.log(2.0)])
    mean = torch.tensor([[1.0, -1.0]]).expand(40_000, 2)
    torch.manual_seed(1)
    a = model.sample(mean)
    torch.testing.assert_close(a.mean(0), torch.tensor([1.0, -1.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(a.std(0), torch.tensor([0.5, 2.0]), atol=0.05, rtol=0)


def test_env_gets_clipped_actions_while_the_log_prob_uses_the_raw_sample():
    raw = torch.tensor([[3.5, -0.5], [-7.0, 1.5]])
    np.testing.assert_array_equal(action_to_env(raw, ACT2), [[2.0, -0.5], [-2.0, 1.5]])
    assert raw[0, 0] == 3.5  # clipping copies: the sample the gradient sees is untouched


def test_worker_stores_unclipped_actions_for_the_gradient():
    cfg = _cfg("Pendulum-v1", envs=4, rollout=16)
    server = _server(cfg)
    worker = Worker(cfg, 1, server)
    with torch.no_grad():
        worker.model.log_std.fill_(2.0)  # std 7.4 on a [-2, 2] range: most samples fall outside
    rollout = worker.collect()
    assert rollout.actions.abs().max() > 2.0, "the rollout must keep the raw, unclipped sample"
    dist = worker.model.distribution(worker.model(rollout.obs.reshape(-1, 3))[0])
    raw_lp = dist.log_prob(rollout.actions.reshape(-1, 1))
    clipped_lp = dist.log_prob(rollout.actions.reshape(-1, 1).clamp(-2, 2))
    assert not torch.allclose(raw_lp, clipped_lp)
    worker.envs.close()


# ----- running statistics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(1, 1), (2, 7), (50, 3), (1000, 1), (5, 5, 5, 20)])
def test_merging_moments_equals_the_moments_of_the_concatenated_data(sizes):
    rng = np.random.default_rng(sum(sizes))
    chunks = [rng.normal(loc=i * 3.0, scale=1 + i, size=(n, 4)) for i, n in enumerate(sizes)]
    merged = RunningMeanStd.zeros((4,))
    for chunk in chunks:
        merged.merge_(RunningMeanStd.of(chunk))
    everything = np.concatenate(chunks)
    np.testing.assert_allclose(merged.mean, everything.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.var, everything.var(0), rtol=1e-10, atol=1e-12)
    assert merged.count == len(everything)


def test_merge_is_order_independent_and_a_pure_function():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(10, 2)), rng.normal(5, 2, size=(30, 2))
    ma, mb = RunningMeanStd.of(a), RunningMeanStd.of(b)
    ab = merge_moments(ma.mean, ma.var, ma.count, mb.mean, mb.var, mb.count)
    ba = merge_moments(mb.mean, mb.var, mb.count, ma.mean, ma.var, ma.count)
    for x, y in zip(ab, ba, strict=True):
        np.testing.assert_allclose(x, y)
    np.testing.assert_array_equal(ma.mean, a.mean(0))  # inputs untouched


def test_merging_nothing_changes_nothing():
    stats = RunningMeanStd.of(np.arange(6.0).reshape(3, 2))
    before = stats.copy()
    stats.merge_(RunningMeanStd.zeros((2,)))
    np.testing.assert_array_equal(stats.mean, before.mean)
    np.testing.assert_array_equal(stats.var, before.var)
    assert stats.count == 3


def test_normalize_standardizes_and_clips():
    rng = np.random.default_rng(0)
    data = rng.normal(4.0, 3.0, size=(5000, 2))
    stats = RunningMeanStd.of(data)
    z = stats.normalize(data)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-4)
    assert np.abs(stats.normalize(np.array([[1e6, -1e6]]))).max() == OBS_CLIP
    np.testing.assert_array_equal(RunningMeanStd.zeros((2,)).normalize(np.array([0.5, -3.0])), [0.5, -3.0])


def test_reward_scaler_divides_by_the_running_std_of_the_discounted_return():
    rng = np.random.default_rng(1)
    gamma = 0.9
    scaler = RewardScaler(num_envs=3, gamma=gamma)
    ret, seen = np.zeros(3), []
    for _ in range(50):
        rewards = rng.normal(2.0, 5.0, size=3)
        dones = rng.random(3) < 0.1
        scaled = scaler(rewards, dones)
        ret = ret * gamma + rewards  # reference: VecNormalize's bookkeeping written out
        seen.append(ret.copy())
        expected = np.clip(rewards / np.sqrt(np.concatenate(seen).var() + 1e-8), -10, 10)
        np.testing.assert_allclose(scaled, expected, rtol=1e-5)
        ret[dones] = 0.0
    np.testing.assert_allclose(scaler.returns, ret)


# ----- statistics through the parameter server ------------------------------------------------------------


def _cfg(env_id: str = "Pendulum-v1", envs: int = 4, rollout: int = 8, **env_kwargs) -> Config:
    cfg = Config()
    cfg.env.id = env_id
    cfg.env.normalize_obs = True
    cfg.env.kwargs = env_kwargs
    cfg.worker.envs_per_worker = envs
    cfg.worker.rollout_len = rollout
    cfg.train = NO_STOP
    return cfg


def _server(cfg: Config) -> ParameterServer:
    env = gym.make(cfg.env.id)
    model = build_model(cfg, env.observation_space, env.action_space)
    env.close()
    return ParameterServer(model, OptimConfig(), ServerConfig(), cfg.train)


def _push(server: ParameterServer, rank: int, stats: RunningMeanStd | None):
    grads = torch.zeros(server.num_params)
    return server.push(GradientPush(rank=rank, version=server.version, grads=grads, env_steps=1, obs_stats=stats))


def test_server_merges_worker_statistics_and_ships_them_back():
    cfg = _cfg()
    server = _server(cfg)
    assert server.pull().obs_stats is None  # nothing merged yet: workers keep their identity statistics
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(40, 3)), rng.normal(1, 2, size=(24, 3)), rng.normal(-3, 1, size=(8, 3))
    _push(server, 1, RunningMeanStd.of(a))
    _push(server, 2, RunningMeanStd.of(b))
    reply = _push(server, 1, RunningMeanStd.of(c))
    everything = np.concatenate([a, b, c])
    for shipped in (reply.obs_stats, server.pull().obs_stats):
        np.testing.assert_allclose(shipped.mean, everything.mean(0))
        np.testing.assert_allclose(shipped.var, everything.var(0))
        assert shipped.count == 72
    reply.obs_stats.mean += 100  # a reply holds a copy, never the live statistics
    np.testing.assert_allclose(server.obs_stats.mean, everything.mean(0))
    # A push without statistics (e.g. another job's worker) still gets the current ones back.
    assert _push(server, 2, None).obs_stats.count == 72


def test_server_ignores_statistics_of_the_wrong_shape_or_non_finite():
    server = _server(_cfg())
    _push(server, 1, RunningMeanStd.of(np.ones((4, 3))))
    _push(server, 1, RunningMeanStd.of(np.ones((4, 5))))
    _push(server, 1, RunningMeanStd(np.array([np.nan, 0, 0]), np.ones(3), 2.0))
    assert server.obs_stats.count == 4


def test_statistics_survive_pickling_and_a_checkpoint_round_trip(tmp_path):
    cfg = _cfg()
    server = _server(cfg)
    data = np.random.default_rng(2).normal(3, 2, size=(50, 3))
    request = GradientPush(1, 0, torch.zeros(server.num_params), 50, obs_stats=RunningMeanStd.of(data))
    server.push(pickle.loads(pickle.dumps(request)))  # RPC pickles requests and replies
    save_checkpoint(tmp_path / "ckpt.pt", server.state_dict())
    restored = _server(cfg)
    restored.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt"))  # weights_only=True
    np.testing.assert_allclose(restored.obs_stats.mean, data.mean(0))
    np.testing.assert_allclose(restored.obs_stats.var, data.var(0))
    assert restored.obs_stats.count == 50
    assert restored.pull().obs_stats.count == 50
    plain = _server(_cfg())  # a run without normalization checkpoints None and restores None
    plain_state = plain.state_dict()
    assert plain_state["obs_stats"] is None
    restored.load_state_dict(plain_state)
    assert restored.obs_stats is None


def test_two_workers_share_the_server_statistics():
    cfg = _cfg(envs=3, rollout=5)
    server = _server(cfg)
    workers = [Worker(cfg, rank, server) for rank in (1, 2)]
    for w in workers:
        w._apply(server.pull())
    for _ in range(3):
        for w in workers:
            w.step()
    assert server.obs_stats.count == 2 * 3 * 3 * 5  # every observation acted on, counted once
    workers[0].step()
    np.testing.assert_allclose(workers[0].obs_stats.mean, server.obs_stats.mean)
    # The next rollout acts on observations normalized with exactly those statistics.
    stats, raw = workers[0].obs_stats.copy(), workers[0]._raw_obs.copy()
    rollout = workers[0].collect()
    np.testing.assert_allclose(rollout.obs[0].numpy(), stats.normalize(raw), rtol=1e-6)
    for w in workers:
        w.envs.close()


def test_reward_scaling_leaves_the_logged_returns_raw():
    cfg = _cfg(envs=2, rollout=50)
    cfg.env.scale_rewards = True
    server = _server(cfg)
    worker = Worker(cfg, 1, server)
    worker._apply(server.pull())
    for _ in range(4):  # 200 steps per env: one whole Pendulum episode each
        rollout = worker.collect()
        worker.compute_gradients(rollout)
        worker.store.push(worker._request({}))
    assert rollout.rewards.abs().max() <= 10.0
    assert len(server.stats.returns) == 2 and min(server.stats.returns) < -100  # raw Pendulum returns, not scaled ones
    worker.envs.close()
