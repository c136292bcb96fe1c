"""The three terms of the A2C loss, each a small named function (as in TorchBeast)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `x` over the entries where `mask` is true (all entries when mask is None)."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def policy_gradient_loss(
    log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """-E[log pi(a|s) * A]; advantages are constants (no gradient flows into the critic from here)."""
    return -masked_mean(log_probs * advantages.detach(), mask)


def value_loss(values: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between V(s) and its n-step / GAE target (the target is a constant)."""
    return 0.5 * masked_mean((targets.detach() - values).pow(2), mask)


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean policy entropy; the total loss subtracts it, scaled, to keep exploring."""
    return masked_mean(entropy, mask)


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
    mask: torch.Tensor | None = None,
) -> LossTerms:
    """policy loss + value_coef * value loss - entropy_coef * entropy, averaged where `mask` is true."""
    pg = policy_gradient_loss(log_probs, advantages, mask)
    vl = value_loss(values, targets, mask)
    ent = entropy_bonus(entropy, mask)
    return LossTerms(total=pg + value_coef * vl - entropy_coef * ent, policy=pg, value=vl, entropy=ent)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is a perfect critic, <= 0 no better than a constant."""
    var = target.var()
    if var.item() == 0:
        return float("nan")
    return float(1.0 - (target - predicted).var() / var)
