"""MLPActorCritic sampling: Gumbel-max draws follow softmax(logits); the Gaussian head matches torch.distributions."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from distributed_a3c.models import MLPActorCritic

N_SAMPLES = 200_000


def _chi_square_critical(dof: int, z: float = 3.719) -> float:
    """Upper quantile of chi-square(dof) by Wilson-Hilferty; z = 3.719 is the normal 1 - 1e-4 quantile."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def _discrete_policy(n_actions: int) -> MLPActorCritic:
    obs = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    return MLPActorCritic(obs, gym.spaces.Discrete(n_actions), hidden_sizes=[8])


def _gaussian_policy(action_dim: int) -> MLPActorCritic:
    obs = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    act = gym.spaces.Box(-2.0, 2.0, shape=(action_dim,), dtype=np.float32)
    return MLPActorCritic(obs, act, hidden_sizes=[8])


@pytest.mark.parametrize(
    "logits",
    [[0.0, 0.0], [1.0, -0.5, 0.3, 2.0], [-3.0, 0.0, 0.5, 1.0, -1.0, 0.2], [4.0, 0.0, 0.0]],
)
def test_gumbel_max_frequencies_match_softmax(logits):
    torch.manual_seed(1234)
    policy = _discrete_policy(len(logits))
    logits_t = torch.tensor(logits)
    actions = policy.sample(logits_t.expand(N_SAMPLES, -1))
    assert actions.shape == (N_SAMPLES,)
    assert actions.dtype == torch.long
    counts = torch.bincount(actions, minlength=len(logits)).double()
    expected = torch.softmax(logits_t.double(), -1) * N_SAMPLES
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < _chi_square_critical(len(logits) - 1), (counts.tolist(), expected.tolist())
    # The tolerance is tight enough to tell a biased sampler apart (e.g. sampling uniformly).
    uniform = torch.full_like(expected, N_SAMPLES / len(logits))
    if not torch.allclose(expected, uniform):
        assert float(((counts - uniform) ** 2 / uniform).sum()) > _chi_square_critical(len(logits) - 1)


def test_gumbel_max_uses_each_rows_logits_and_never_picks_impossible_actions():
    torch.manual_seed(7)
    policy = _discrete_policy(3)
    rows = torch.tensor([[0.0, -math.inf, 1.0], [-math.inf, 2.0, -math.inf]])
    actions = policy.sample(rows.repeat(20_000, 1)).view(20_000, 2)
    assert not bool((actions[:, 0] == 1).any())
    assert bool((actions[:, 1] == 1).all())
    p0 = torch.softmax(torch.tensor([0.0, 1.0]), -1)
    freq = torch.bincount(actions[:, 0], minlength=3).double() / 20_000
    torch.testing.assert_close(freq[[0, 2]], p0.double(), atol=0.015, rtol=0)


def test_gaussian_log_prob_and_entropy_match_normal():
    torch.manual_seed(3)
    policy = _gaussian_policy(2)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 0.3]))
    obs = torch.randn(6, 3)
    mean, _ = policy(obs)
    actions = mean.detach() + torch.randn(6, 2)
    dist = policy.distribution(mean)
    reference = Normal(mean, policy.log_std.exp().expand_as(mean))
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions).sum(-1))
    torch.testing.assert_close(dist.entropy(), reference.entropy().sum(-1))
    # By hand: entropy of a diagonal Gaussian is sum(0.5 * log(2 pi e) + log_std), the same for every state.
    by_hand = float(sum(0.5 * math.log(2 * math.pi * math.e) + s for s in (-0.5, 0.3)))
    torch.testing.assert_close(dist.entropy(), torch.full((6,), by_hand))


def test_gaussian_log_prob_trains_the_log_std():
    policy = _gaussian_policy(2)
    mean = torch.zeros(4, 2)
    policy.distribution(mean).log_prob(torch.full((4, 2), 2.0)).sum().backward()
    # d/ds log N(x; mu, e^s) = (x - mu)^2 e^{-2s} - 1 = 3 at x = 2, mu = 0, s = 0; summed over 4 rows.
    torch.testing.assert_close(policy.log_std.grad, torch.full((2,), 4 * (2.0**2 - 1.0)))


def test_gaussian_samples_have_the_policy_mean_and_std():
    torch.manual_seed(11)
    policy = _gaussian_policy(2)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-1.0, 0.5]))
    mean = torch.tensor([0.3, -1.2])
    samples = policy.sample(mean.expand(N_SAMPLES, -1)).detach()
    assert samples.shape == (N_SAMPLES, 2)
    std = torch.exp(torch.tensor([-1.0, 0.5]))
    torch.testing.assert_close(samples.mean(0), mean, atol=float(5 * std.max() / math.sqrt(N_SAMPLES)), rtol=0)
    torch.testing.assert_close(samples.std(0), std, rtol=0.01, atol=0)


@pytest.mark.parametrize("shared_torso", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_functional_forward_equals_the_modules_and_follows_flattened_weights(shared_torso, activation):
    from distributed_a3c.rl.grads import flatten_parameters_

    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    model = MLPActorCritic(obs_space, gym.spaces.Discrete(4), [16, 8], activation, shared_torso)
    flat = flatten_parameters_(model)
    flat.load_(torch.randn(flat.numel))  # the layers the forward pass reads must be the flattened ones
    obs = torch.randn(5, 3)
    logits, values = model(obs)
    if shared_torso:
        h = model.torso(obs)
        expected = model.policy_head(h), model.value_head(h).squeeze(-1)
    else:
        expected = model.actor(obs), model.critic(obs).squeeze(-1)
    torch.testing.assert_close(logits, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(values, expected[1], rtol=0, atol=0)
    torch.testing.assert_close(model.value(obs), expected[1], rtol=0, atol=0)
    (logits.sum() + values.sum()).backward()
    assert float(flat.grads.abs().sum()) > 0  # gradients land in the flat buffer
