"""The server's short optimizer path applies torch.optim's Adam / RMSprop updates to torch.optim's state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from distributed_a3c.config import OptimConfig
from distributed_a3c.optim import build_optimizer, step_flat

CONFIGS = {
    "adam": OptimConfig(name="adam", lr=3e-3, eps=1e-5, beta1=0.8, beta2=0.99),
    "rmsprop": OptimConfig(name="rmsprop", lr=3e-3, eps=1e-5, alpha=0.95),
}


def _pair(name: str):
    """(param, optimizer) twice, identical: one stepped by torch.optim, one by step_flat."""
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(1000))
    b = nn.Parameter(a.detach().clone())
    return (a, build_optimizer([a], CONFIGS[name])), (b, build_optimizer([b], CONFIGS[name]))


def _torch_step(param, optimizer, grad):
    param.grad = grad.clone()
    optimizer.step()
    param.grad = None


def _step_both(a, opt_a, b, opt_b, gen: torch.Generator, steps: int) -> None:
    """The same random gradients through torch.optim (a) and step_flat (b); the weights agree after each."""
    for _ in range(steps):
        grad = torch.randn(1000, generator=gen)
        _torch_step(a, opt_a, grad)
        step_flat(opt_b, b, grad)
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_step_flat_matches_torch_optim_step_for_step(name):
    (a, opt_a), (b, opt_b) = _pair(name)
    _step_both(a, opt_a, b, opt_b, torch.Generator().manual_seed(1), 25)
    state_a, state_b = opt_a.state_dict()["state"][0], opt_b.state_dict()["state"][0]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_b[key], state_a[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_state_written_by_step_flat_loads_into_torch_optim_and_back(name):
    (a, opt_a), (b, opt_b) = _pair(name)
    gen = torch.Generator().manual_seed(2)
    _step_both(a, opt_a, b, opt_b, gen, 5)
    # Swap the states: each continues from the other's, through the other path.
    sa, sb = copy.deepcopy(opt_a.state_dict()), copy.deepcopy(opt_b.state_dict())
    opt_a.load_state_dict(sb)
    opt_b.load_state_dict(sa)
    _step_both(a, opt_a, b, opt_b, gen, 5)
    assert float(opt_a.state_dict()["state"][0]["step"]) == float(opt_b.state_dict()["state"][0]["step"]) == 10


def test_step_flat_follows_the_learning_rate_of_the_param_group():
    (a, opt_a), (b, opt_b) = _pair("adam")
    for opt in (opt_a, opt_b):
        opt.param_groups[0]["lr"] = 0.5
    grad = torch.ones(1000)
    _torch_step(a, opt_a, grad)
    step_flat(opt_b, b, grad)
    torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-6, atol=1e-7)


def test_unknown_optimizer_is_a_one_line_error():
    with pytest.raises(ValueError, match="optim.name='sgd' is invalid: must be one of adam, rmsprop"):
        build_optimizer([nn.Parameter(torch.zeros(1))], OptimConfig(name="sgd"))
