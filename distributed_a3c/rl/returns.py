"""n-step returns and GAE over [T, B] rollouts, with correct episode boundaries.

At a step where an episode ended, `terminated` means the true next state is terminal (value 0) while
`truncated` means it was cut by a time limit: then the value of the episode's real final observation
(`final_values`) stands in for the next state's value. Nothing propagates across an episode boundary,
because the next row of the rollout already belongs to the new episode.
"""

from __future__ import annotations

import torch


def advantages_and_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    gae_lambda: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and value targets, both [T, B].

    rewards, values, terminated, truncated, final_values: [T, B]; bootstrap_value: [B], the value of the
    observation after the last step. final_values[t] is only read where truncated[t] (and not terminated).
    With gae_lambda=1 the value targets are the n-step returns of the A3C paper.
    """
    next_values, done = _next_values(values, bootstrap_value, terminated, truncated, final_values)
    deltas = rewards + gamma * next_values - values
    advantages = _sum_backward(deltas, gamma * gae_lambda * (1.0 - done))
    return advantages, advantages + values


def _next_values(
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V of each step's next state within its episode, and 1.0 where an episode ended at the step."""
    terminated = terminated.to(values.dtype)
    done = torch.maximum(terminated, truncated.to(values.dtype))
    next_values = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    # After an episode end the next row is a new episode: use V(final obs) instead, or 0 if terminal.
    return torch.where(done.bool(), final_values, next_values) * (1.0 - terminated), done


def _sum_backward(deltas: torch.Tensor, decays: torch.Tensor) -> torch.Tensor:
    """out[t] = deltas[t] + decays[t] * out[t + 1], with out[T] = 0."""
    out = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + decays[t] * running
        out[t] = running
    return out


def vtrace(
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    log_rhos: torch.Tensor,
    gamma: float,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace (Espeholt et al. 2018, IMPALA): policy-gradient advantages and value targets, both [T, B], for
    a rollout acted by an older policy. `log_rhos` [T, B]: log pi(a|x) - log mu(a|x), the learner's policy
    over the one that acted. Episode ends are handled as in `advantages_and_returns`; with every log_rho 0
    (on-policy) both outputs equal its gae_lambda=1 advantages and n-step returns.
    """
    rhos = log_rhos.exp()
    clipped_rhos = rhos.clamp(max=rho_bar)
    next_values, done = _next_values(values, bootstrap_value, terminated, truncated, final_values)
    deltas = clipped_rhos * (rewards + gamma * next_values - values)
    vs = values + _sum_backward(deltas, gamma * rhos.clamp(max=c_bar) * (1.0 - done))
    # The advantage bootstraps from v_s of the next step within an episode; across an end, as the TD error.
    next_vs = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
    next_vs = torch.where(done.bool(), next_values, next_vs)
    return clipped_rhos * (rewards + gamma * next_vs - values), vs
