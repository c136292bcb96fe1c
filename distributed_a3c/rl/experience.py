"""Experience as a data-parallel worker sends it (mode=data, mode=central): what happened in an n-step
rollout, without any value estimate. The learner evaluates it under its own weights into a `Rollout`
for the A2C step (Lapan, Deep RL Hands-On, ch. 13: data parallelism). Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from distributed_a3c.rl.a2c import Rollout


@dataclass
class Experience:
    obs: torch.Tensor  # [T, B, *obs_shape], as the acting policy saw them
    actions: torch.Tensor  # [T, B, *action_shape]
    rewards: torch.Tensor  # [T, B] float32
    terminated: torch.Tensor  # [T, B] bool
    truncated: torch.Tensor  # [T, B] bool
    next_obs: torch.Tensor  # [B, *obs_shape], the observation after the last step (to bootstrap from)
    final_obs: torch.Tensor  # [K, *obs_shape], real last observations of the K episodes cut by a time limit
    final_index: torch.Tensor  # [K, 2] int64, the (t, b) step each of those episodes was cut at
    valid: torch.Tensor | None = None  # [T, B] bool, NEXT_STEP envs: False on the step that only resets
    behaviour_log_probs: torch.Tensor | None = None  # [T, B] float32, log mu(a|x) of the acting policy

    def to(self, device: torch.device | str) -> Experience:
        return Experience(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    def clone(self) -> Experience:
        return Experience(**{f.name: None if (t := getattr(self, f.name)) is None else t.clone() for f in fields(self)})

    @property
    def nbytes(self) -> int:
        """Bytes of tensor payload (what travels on the wire, less the envelope)."""
        return sum(t.nbytes for f in fields(self) if isinstance(t := getattr(self, f.name), torch.Tensor))


def _to(t: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
    return None if t is None else t.to(device, non_blocking=True)


def concat(batch: list[Experience]) -> Experience:
    """Rollouts of the same length side by side, as one rollout of their summed batch width."""
    if len(batch) == 1:
        return batch[0]
    offsets = torch.tensor([0] + [e.rewards.shape[1] for e in batch[:-1]]).cumsum(0).tolist()
    final_index = [
        e.final_index + torch.tensor([0, off], device=e.final_index.device)
        for e, off in zip(batch, offsets, strict=True)
    ]
    has_valid = [e.valid is not None for e in batch]
    if any(has_valid) and not all(has_valid):
        raise ValueError("cannot batch rollouts of next-step-autoreset envs with others")
    has_log_probs = all(e.behaviour_log_probs is not None for e in batch)  # else learned from without V-trace

    def cat(name: str, dim: int) -> torch.Tensor:
        return torch.cat([getattr(e, name) for e in batch], dim)

    return Experience(
        obs=cat("obs", 1),
        actions=cat("actions", 1),
        rewards=cat("rewards", 1),
        terminated=cat("terminated", 1),
        truncated=cat("truncated", 1),
        next_obs=cat("next_obs", 0),
        final_obs=cat("final_obs", 0),
        final_index=torch.cat(final_index),
        valid=cat("valid", 1) if all(has_valid) else None,
        behaviour_log_probs=cat("behaviour_log_probs", 1) if has_log_probs else None,
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, e: Experience) -> Rollout:
    """The rollout `e` with values from `model` (one forward pass over every observation it holds).

    `model` needs `value(obs [N, ...]) -> [N]` (models.py's feed-forward actor-critics).
    """
    T, B = e.rewards.shape
    rows = torch.cat([e.obs.reshape(T * B, *e.obs.shape[2:]), e.next_obs, e.final_obs])
    all_values = model.value(rows).float()
    values = all_values[: T * B].reshape(T, B)
    bootstrap = all_values[T * B : T * B + B]
    if e.valid is not None:  # NEXT_STEP: V(final obs) of an episode that ended at t is the value of row t + 1
        final_values = torch.cat([values[1:], bootstrap.unsqueeze(0)])
    else:
        final_values = torch.zeros_like(values)
        if e.final_index.numel():
            t, b = e.final_index.unbind(1)
            final_values[t, b] = all_values[T * B + B :]
    return Rollout(
        e.obs,
        e.actions,
        e.rewards,
        values,
        e.terminated,
        e.truncated,
        final_values,
        bootstrap,
        valid=e.valid,
        behaviour_log_probs=e.behaviour_log_probs,
    )
