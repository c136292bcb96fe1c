"""The server's FlatOptimizer applies torch.optim's Adam / RMSprop updates and speaks its state_dict format."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from distributed_a3c.config import OptimConfig
from distributed_a3c.server.optim import FlatOptimizer

CONFIGS = {
    "adam": OptimConfig(name="adam", lr=3e-3, eps=1e-5, beta1=0.8, beta2=0.99),
    "rmsprop": OptimConfig(name="rmsprop", lr=3e-3, eps=1e-5, alpha=0.95),
}
N = 1000


def _torch_optimizer(param: nn.Parameter, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam([param], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    return torch.optim.RMSprop([param], lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps)


def _pair(name: str):
    """The same initial weights twice: (param, torch.optim optimizer) and (tensor, FlatOptimizer)."""
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(N))
    b = a.detach().clone()
    return (a, _torch_optimizer(a, cfg)), (b, FlatOptimizer(b, cfg))


def _torch_step(param, optimizer, grad):
    param.grad = grad.clone()
    optimizer.step()
    param.grad = None


def _step_both(a, opt_a, b, opt_b, gen: torch.Generator, steps: int) -> None:
    """The same random gradients through torch.optim (a) and FlatOptimizer (b); the weights agree after each."""
    for _ in range(steps):
        grad = torch.randn(N, generator=gen)
        _torch_step(a, opt_a, grad)
        opt_b.step(grad)
        torch.testing.assert_close(b, a.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_flat_optimizer_matches_torch_optim_step_for_step_and_writes_its_state_dict(name):
    (a, opt_a), (b, opt_b) = _pair(name)
    _step_both(a, opt_a, b, opt_b, torch.Generator().manual_seed(1), 25)
    sd_a, sd_b = opt_a.state_dict(), opt_b.state_dict()
    assert sd_b["param_groups"] == sd_a["param_groups"]  # every key torch writes, same values
    state_a, state_b = sd_a["state"][0], sd_b["state"][0]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert state_b[key].dtype == state_a[key].dtype and state_b[key].shape == state_a[key].shape, key
        torch.testing.assert_close(state_b[key], state_a[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_states_swap_between_flat_optimizer_and_torch_optim(name):
    (a, opt_a), (b, opt_b) = _pair(name)
    gen = torch.Generator().manual_seed(2)
    _step_both(a, opt_a, b, opt_b, gen, 5)
    # Swap the states: each continues from the other's, through the other path.
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    opt_a.load_state_dict(sb)
    opt_b.load_state_dict(sa)
    _step_both(a, opt_a, b, opt_b, gen, 5)
    assert float(opt_a.state_dict()["state"][0]["step"]) == float(opt_b.state_dict()["state"][0]["step"]) == 10


def test_state_dict_is_a_copy_that_later_steps_leave_alone():
    _, (_, opt) = _pair("adam")
    opt.step(torch.ones(N))
    saved = opt.state_dict()
    before = {k: v.clone() for k, v in saved["state"][0].items()}
    opt.step(torch.ones(N))
    for k, v in saved["state"][0].items():
        assert torch.equal(v, before[k]), k


def test_a_resumed_run_keeps_its_configured_learning_rate():
    """torch.optim would take lr from the checkpoint; the run's config wins here."""
    (a, opt_a), (b, opt_b) = _pair("adam")
    _step_both(a, opt_a, b, opt_b, torch.Generator().manual_seed(3), 3)
    fresh_cfg = OptimConfig(name="adam", lr=0.5, eps=1e-5, beta1=0.8, beta2=0.99)
    resumed = FlatOptimizer(b, fresh_cfg)
    resumed.load_state_dict(opt_b.state_dict())
    opt_a.param_groups[0]["lr"] = 0.5
    _step_both(a, opt_a, b, resumed, torch.Generator().manual_seed(4), 2)


def test_loading_an_empty_state_starts_afresh():
    _, (_, opt) = _pair("rmsprop")
    opt.step(torch.ones(N))
    opt.load_state_dict(FlatOptimizer(torch.zeros(N), CONFIGS["rmsprop"]).state_dict())
    assert opt.steps == 0 and opt.state_dict()["state"] == {}


def test_state_of_the_other_optimizer_is_a_one_line_error():
    _, (_, adam) = _pair("adam")
    adam.step(torch.ones(N))
    rmsprop = FlatOptimizer(torch.zeros(N), CONFIGS["rmsprop"])
    with pytest.raises(ValueError, match="optimizer state is adam's, but optim.name=rmsprop: resume with optim=adam"):
        rmsprop.load_state_dict(adam.state_dict())


def test_state_of_another_size_is_a_one_line_error():
    _, (_, opt) = _pair("adam")
    opt.step(torch.ones(N))
    other = FlatOptimizer(torch.zeros(N + 1), CONFIGS["adam"])
    with pytest.raises(ValueError, match=f"has {N} parameters, this model {N + 1}"):
        other.load_state_dict(opt.state_dict())


def test_unknown_optimizer_is_a_one_line_error():
    with pytest.raises(ValueError, match="optim.name='sgd' is invalid: must be one of adam, rmsprop"):
        FlatOptimizer(torch.zeros(1), OptimConfig(name="sgd"))


def test_building_and_stepping_the_server_does_not_import_torch_dynamo():
    """torch.optim's constructor imports torch._dynamo: ~1.5 s on every job's start-up, workers waiting."""
    code = (
        "import sys, torch\n"
        "from distributed_a3c.train import precheck\n"
        "from distributed_a3c.build import build_server\n"
        "from distributed_a3c.messages import GradientPush\n"
        "server = build_server(precheck([]), 0, 3, None)\n"
        "server.push(GradientPush(1, 0, torch.ones(server.num_params), env_steps=1))\n"
        "server.load_state_dict(server.state_dict())\n"
        "print(server.version, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "False"]
