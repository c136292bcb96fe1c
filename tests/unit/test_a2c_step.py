"""The A2C step against a slow reference written close to the A3C paper (Mnih et al. 2016, Algorithm S3):
per env, walk the rollout backwards accumulating R <- r + gamma R, reset at a terminal state, bootstrapped
from V(s_T) (or from the real final observation of a truncated episode). No environments, no processes."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from distributed_a3c.models import MLPActorCritic
from distributed_a3c.rl.a2c import A2CHyperparameters, Rollout, a2c_step

T, B = 6, 3


def _model() -> MLPActorCritic:
    torch.manual_seed(0)
    return MLPActorCritic(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3), hidden_sizes=[8])


def _rollout(model: MLPActorCritic) -> Rollout:
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(T, B, 4, generator=g)
    with torch.no_grad():
        values = model.value(obs.reshape(T * B, 4)).reshape(T, B)
        final_obs = torch.randn(T, B, 4, generator=g)
        final_values = model.value(final_obs.reshape(T * B, 4)).reshape(T, B)
        bootstrap = model.value(torch.randn(B, 4, generator=g))
    terminated = torch.zeros(T, B, dtype=torch.bool)
    truncated = torch.zeros(T, B, dtype=torch.bool)
    terminated[2, 0] = terminated[5, 1] = True
    truncated[3, 2] = True
    return Rollout(
        obs=obs,
        actions=torch.randint(0, 3, (T, B), generator=g),
        rewards=torch.randn(T, B, generator=g),
        values=values,
        terminated=terminated,
        truncated=truncated,
        final_values=torch.where(truncated, final_values, torch.zeros_like(final_values)),
        bootstrap_value=bootstrap,
    )


def _reference_loss(model: MLPActorCritic, r: Rollout, h: A2CHyperparameters) -> torch.Tensor:
    """Sum the paper's per-step terms one at a time, then average as the batched loss does."""
    policy_terms, value_terms, entropies = [], [], []
    for b in range(B):
        R = float(r.bootstrap_value[b])  # V(s_T): the rollout was cut, not ended
        A = 0.0  # GAE accumulator (lambda = 1: the n-step advantage R - V)
        next_value = float(r.bootstrap_value[b])
        for t in reversed(range(T)):
            reward, v = float(r.rewards[t, b]), float(r.values[t, b])
            if r.terminated[t, b]:
                R, next_value, A = 0.0, 0.0, 0.0  # nothing after a terminal state
            elif r.truncated[t, b]:  # the episode went on, but not in this rollout: V(real final obs)
                R, next_value, A = float(r.final_values[t, b]), float(r.final_values[t, b]), 0.0
            R = reward + h.gamma * R
            delta = reward + h.gamma * next_value - v
            A = delta + h.gamma * h.gae_lambda * A
            next_value = v
            dist_inputs, value = model(r.obs[t, b].unsqueeze(0))
            dist = model.distribution(dist_inputs)
            advantage = A if h.gae_lambda < 1 else R - v
            target = advantage + v
            policy_terms.append(-dist.log_prob(r.actions[t, b].unsqueeze(0))[0] * advantage)
            value_terms.append(0.5 * (target - value[0]) ** 2)
            entropies.append(dist.entropy()[0])
    n = T * B
    policy, value, entropy = sum(policy_terms) / n, sum(value_terms) / n, sum(entropies) / n
    return policy + h.value_coef * value - h.entropy_coef * entropy


def _grads(model: MLPActorCritic, loss: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("gae_lambda", [1.0, 0.9])
def test_the_batched_step_equals_the_papers_loop(gae_lambda):
    model = _model()
    rollout = _rollout(model)
    h = A2CHyperparameters(gamma=0.95, gae_lambda=gae_lambda, value_coef=0.5, entropy_coef=0.01)
    loss, stats = a2c_step(model, rollout, h)
    reference = _reference_loss(model, rollout, h)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(_grads(model, loss), _grads(model, reference), rtol=1e-4, atol=1e-6)
    assert set(stats) >= {"losses/policy_loss", "losses/value_loss", "losses/entropy"}


def test_a_step_never_bootstraps_across_a_terminal_state():
    """Changing the value after an env's terminal step must not change its earlier targets' loss."""
    model = _model()
    r = _rollout(model)
    h = A2CHyperparameters(gamma=0.95)
    base, _ = a2c_step(model, r, h)
    r.bootstrap_value = r.bootstrap_value.clone()
    r.bootstrap_value[1] += 100.0  # env 1 terminated at its last step: V(s_T) must be ignored
    changed, _ = a2c_step(model, r, h)
    assert float(changed.detach()) == pytest.approx(float(base.detach()))
