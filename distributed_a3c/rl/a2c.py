"""One A2C step on one n-step rollout: returns, advantages, the loss and its statistics. Pure torch.

The worker collects a `Rollout` and backpropagates the loss this returns; nothing here knows about
environments, processes or where the gradient goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch.distributions import Distribution

from distributed_a3c.rl.losses import a2c_loss, explained_variance
from distributed_a3c.rl.returns import advantages_and_returns, vtrace


class ActorCritic(Protocol):
    """What the A2C step needs of a model (models.py has the MLP, CNN and LSTM ones)."""

    is_recurrent: bool

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [N, ...] -> (distribution inputs [N, A], values [N]); recurrent models take (obs, state, starts)."""
        ...

    def distribution(self, dist_inputs: torch.Tensor) -> Distribution: ...


@dataclass
class Rollout:
    obs: torch.Tensor  # [T, B, *obs_shape]
    actions: torch.Tensor  # [T, B, *action_shape]
    rewards: torch.Tensor  # [T, B]
    values: torch.Tensor  # [T, B]
    terminated: torch.Tensor  # [T, B]
    truncated: torch.Tensor  # [T, B]
    final_values: torch.Tensor  # [T, B], V(real final obs) where truncated
    bootstrap_value: torch.Tensor  # [B]
    starts: torch.Tensor | None = None  # [T, B], recurrent models: obs[t] begins an episode (state reset)
    initial_state: tuple[torch.Tensor, ...] | None = None  # recurrent models: the state before obs[0]
    valid: torch.Tensor | None = None  # [T, B], NEXT_STEP envs: False on the step that only resets the env
    behaviour_log_probs: torch.Tensor | None = None  # [T, B], log mu(a|x) of the policy that acted (mode=data)


class A2CHyperparameters(NamedTuple):
    gamma: float = 0.99
    gae_lambda: float = 1.0
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    normalize_advantages: bool = False
    vtrace: bool = False  # correct rollouts that carry behaviour_log_probs with V-trace (IMPALA)


def a2c_step(model: ActorCritic, r: Rollout, h: A2CHyperparameters) -> tuple[torch.Tensor, dict[str, float]]:
    """The A2C loss of rollout `r` under `model` (to backpropagate), and its statistics for the logs."""
    T, B = r.rewards.shape
    if r.initial_state is not None:  # replay the rollout from its initial state: BPTT through all T steps
        state = tuple(s.clone() for s in r.initial_state)  # plain tensors, not inference-mode ones
        dist_inputs, values, _ = model.forward_sequence(r.obs, state, r.starts)
        dist_inputs, values = dist_inputs.reshape(T * B, -1), values.reshape(-1)
    else:
        dist_inputs, values = model(r.obs.reshape(T * B, *r.obs.shape[2:]))
    dist = model.distribution(dist_inputs)
    log_probs = dist.log_prob(r.actions.reshape(T * B, *r.actions.shape[2:]))
    ends = (r.rewards, r.values, r.bootstrap_value, r.terminated, r.truncated, r.final_values)
    if h.vtrace and r.behaviour_log_probs is not None:
        log_rhos = log_probs.detach().reshape(T, B) - r.behaviour_log_probs
        if r.valid is not None:  # the step that only resets the env: its action was ignored
            log_rhos = torch.where(r.valid, log_rhos, torch.zeros_like(log_rhos))
        advantages, targets = vtrace(*ends, log_rhos, h.gamma)
    else:
        advantages, targets = advantages_and_returns(*ends, h.gamma, h.gae_lambda)
    mask = None if r.valid is None else r.valid.reshape(-1)
    if h.normalize_advantages and advantages.numel() > 1:
        valid_adv = advantages if r.valid is None else advantages[r.valid]
        advantages = (advantages - valid_adv.mean()) / (valid_adv.std() + 1e-8)
    loss = a2c_loss(
        log_probs,
        dist.entropy(),
        values,
        advantages.reshape(-1),
        targets.reshape(-1),
        h.value_coef,
        h.entropy_coef,
        mask,
    )
    stats = {
        "losses/policy_loss": float(loss.policy.detach()),
        "losses/value_loss": float(loss.value.detach()),
        "losses/entropy": float(loss.entropy.detach()),
    }
    predicted, target = r.values.reshape(-1), targets.reshape(-1)
    if mask is not None:
        predicted, target = predicted[mask], target[mask]
    ev = explained_variance(predicted, target)
    if ev == ev:  # undefined (nan) when every target is equal
        stats["losses/explained_variance"] = ev
    return loss.total, stats
