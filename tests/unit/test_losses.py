"""The A2C loss terms against hand computations, and where their gradients may (not) flow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distributed_a3c.rl.losses import (
    a2c_loss,
    entropy_bonus,
    explained_variance,
    policy_gradient_loss,
    value_loss,
)


def _rand(n: int, seed: int, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float64).requires_grad_(requires_grad)


def test_policy_gradient_loss_by_hand():
    log_probs = [-0.5, -1.2, -0.1]
    advantages = [2.0, -1.0, 0.5]
    expected = -sum(lp * a for lp, a in zip(log_probs, advantages, strict=True)) / 3
    got = policy_gradient_loss(torch.tensor(log_probs), torch.tensor(advantages))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_value_loss_by_hand():
    values = [1.0, 2.0, -0.5, 0.0]
    targets = [1.5, 0.0, -0.5, 3.0]
    expected = 0.5 * sum((t - v) ** 2 for v, t in zip(values, targets, strict=True)) / 4
    assert float(value_loss(torch.tensor(values), torch.tensor(targets))) == pytest.approx(expected, rel=1e-6)


def test_entropy_bonus_is_the_mean_entropy():
    ent = [0.7, 0.1, 0.4]
    assert float(entropy_bonus(torch.tensor(ent))) == pytest.approx(sum(ent) / 3, rel=1e-6)


def test_policy_loss_sends_no_gradient_into_the_advantages():
    log_probs = _rand(6, 0, requires_grad=True)
    advantages = _rand(6, 1, requires_grad=True)
    policy_gradient_loss(log_probs, advantages).backward()
    assert advantages.grad is None
    # d/d log_prob_i of -mean(log_prob * A) is -A_i / N.
    torch.testing.assert_close(log_probs.grad, -advantages.detach() / 6)


def test_value_loss_sends_no_gradient_into_the_targets():
    values = _rand(5, 2, requires_grad=True)
    targets = _rand(5, 3, requires_grad=True)
    value_loss(values, targets).backward()
    assert targets.grad is None
    torch.testing.assert_close(values.grad, (values.detach() - targets.detach()) / 5)


@pytest.mark.parametrize(("value_coef", "entropy_coef"), [(0.5, 0.01), (1.0, 0.0), (0.25, 0.2)])
def test_a2c_total_combines_terms_with_entropy_subtracted(value_coef, entropy_coef):
    n = 8
    log_probs = _rand(n, 4, requires_grad=True)
    entropy = _rand(n, 5).abs().requires_grad_(True)
    values = _rand(n, 6, requires_grad=True)
    advantages = _rand(n, 7, requires_grad=True)
    targets = _rand(n, 8, requires_grad=True)
    terms = a2c_loss(log_probs, entropy, values, advantages, targets, value_coef, entropy_coef)

    lp, ent, v, adv, tgt = (x.detach().numpy() for x in (log_probs, entropy, values, advantages, targets))
    pg = -np.mean(lp * adv)
    vl = 0.5 * np.mean((tgt - v) ** 2)
    en = np.mean(ent)
    assert float(terms.policy.detach()) == pytest.approx(pg, rel=1e-12)
    assert float(terms.value.detach()) == pytest.approx(vl, rel=1e-12)
    assert float(terms.entropy.detach()) == pytest.approx(en, rel=1e-12)
    assert float(terms.total.detach()) == pytest.approx(pg + value_coef * vl - entropy_coef * en, rel=1e-12)

    terms.total.backward()
    # More entropy lowers the loss: minimizing it keeps the policy exploring.
    torch.testing.assert_close(entropy.grad, torch.full_like(entropy, -entropy_coef / n))
    assert advantages.grad is None
    assert targets.grad is None
    torch.testing.assert_close(values.grad, value_coef * (values.detach() - targets.detach()) / n)


def test_higher_entropy_gives_lower_total_loss():
    args = {
        "log_probs": torch.tensor([-0.7, -0.7]),
        "values": torch.tensor([0.0, 1.0]),
        "advantages": torch.tensor([1.0, -1.0]),
        "targets": torch.tensor([0.5, 0.5]),
        "value_coef": 0.5,
        "entropy_coef": 0.1,
    }
    low = a2c_loss(entropy=torch.tensor([0.1, 0.1]), **args).total
    high = a2c_loss(entropy=torch.tensor([0.6, 0.6]), **args).total
    assert float(low - high) == pytest.approx(0.1 * 0.5, rel=1e-5)


def test_explained_variance_perfect_critic_is_one():
    target = _rand(50, 9)
    assert explained_variance(target.clone(), target) == pytest.approx(1.0)


def test_explained_variance_constant_mean_prediction_is_zero():
    target = _rand(50, 10)
    assert explained_variance(torch.full_like(target, float(target.mean())), target) == pytest.approx(0.0, abs=1e-12)


def test_explained_variance_by_hand_and_negative_when_worse_than_constant():
    target = _rand(40, 11)
    predicted = _rand(40, 12)
    t, p = target.numpy(), predicted.numpy()
    expected = 1.0 - np.var(t - p) / np.var(t)
    assert explained_variance(predicted, target) == pytest.approx(expected, rel=1e-9)
    assert explained_variance(-3 * target, target) < 0


def test_explained_variance_undefined_for_constant_targets():
    target = torch.full((10,), 2.5)
    assert math.isnan(explained_variance(_rand(10, 13).float(), target))
    assert math.isnan(explained_variance(target.clone(), target))
