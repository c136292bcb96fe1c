"""Gradient-parallel A3C: workers push gradients to a parameter server over torch.distributed.rpc."""

__version__ = "0.1.0"
