"""Parameters and gradients as ONE flat contiguous tensor each.

`flatten_parameters_` re-points every parameter's data and grad at slices of two flat buffers, so
backward writes straight into the flat gradient that is sent over the wire, and a weight update is one
`copy_` into the flat weights: no per-parameter Python loop on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FlatParameters:
    weights: torch.Tensor
    """All parameters of the module, concatenated; each parameter is a view into it."""
    grads: torch.Tensor
    """All gradients, concatenated in the same order; each parameter's .grad is a view into it."""

    @property
    def numel(self) -> int:
        return self.weights.numel()

    def load_(self, flat_weights: torch.Tensor) -> None:
        """Overwrite every parameter at once from a flat vector (any device / dtype)."""
        self.weights.copy_(flat_weights)

    def zero_grad_(self) -> None:
        self.grads.zero_()


def flatten_parameters_(module: nn.Module) -> FlatParameters:
    """Make `module`'s parameters and gradients views into two flat buffers (in place)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    device, dtype = params[0].device, params[0].dtype
    total = sum(p.numel() for p in params)
    weights = torch.empty(total, device=device, dtype=dtype)
    grads = torch.zeros(total, device=device, dtype=dtype)
    offset = 0
    for p in params:
        n = p.numel()
        weights[offset : offset + n].copy_(p.data.reshape(-1))
        p.data = weights[offset : offset + n].view_as(p)
        p.grad = grads[offset : offset + n].view_as(p)
        offset += n
    return FlatParameters(weights=weights, grads=grads)


def flat_to_tensors(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like `like` (the inverse of `torch.cat([t.flatten()])`)."""
    need = sum(t.numel() for t in like)
    if need != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} elements, the tensors need {need}")
    out, offset = [], 0
    for t in like:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def clip_grad_norm_(flat_grads: torch.Tensor, max_norm: float) -> float:
    """Scale the flat gradient in place to at most `max_norm` (0 = no clipping); return the norm before."""
    norm = flat_grads.norm()
    if max_norm > 0:
        flat_grads.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return float(norm)
