"""The three terms of the A2C loss, each a small named function (as in TorchBeast)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def policy_gradient_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-E[log pi(a|s) * A]; advantages are constants (no gradient flows into the critic from here)."""
    return -(log_probs * advantages.detach()).mean()


def value_loss(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between V(s) and its n-step / GAE target (the target is a constant)."""
    return 0.5 * (targets.detach() - values).pow(2).mean()


def entropy_bonus(entropy: torch.Tensor) -> torch.Tensor:
    """Mean policy entropy; the total loss subtracts it, scaled, to keep exploring."""
    return entropy.mean()


@dataclass
class LossTerms:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor


def a2c_loss(
    log_probs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    advantages: torch.Tensor,
    targets: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
) -> LossTerms:
    """policy loss + value_coef * value loss - entropy_coef * entropy."""
    pg = policy_gradient_loss(log_probs, advantages)
    vl = value_loss(values, targets)
    ent = entropy_bonus(entropy)
    return LossTerms(total=pg + value_coef * vl - entropy_coef * ent, policy=pg, value=vl, entropy=ent)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is a perfect critic, <= 0 no better than a constant."""
    var = target.var()
    if var.item() == 0:
        return float("nan")
    return float(1.0 - (target - predicted).var() / var)
