"""The server's optimizer: Adam or RMSprop for one flat parameter tensor, in torch.optim's formulas and format.

Why not a `torch.optim` optimizer itself, measured on the 2-core machine:
- constructing one imports `torch._dynamo` (1.4-1.6 s), on the server's start-up path while every worker
  waits for it: a tenth of the default CartPole job's launch-to-exit time;
- its `step()` spent ~250 us of Python bookkeeping (profiler hooks, grouping tensors by device and dtype)
  around an ~18 us update, and that bound the server's pushes/s.
`FlatOptimizer` applies torch's single-tensor Adam / RMSprop update (tested step for step against
torch.optim) and reads and writes torch's `state_dict` format, so checkpoints load into torch.optim and back.
"""

from __future__ import annotations

import math

import torch

from distributed_a3c.config import OptimConfig

# The moment tensors each optimizer keeps, named as torch.optim names them in its state_dict.
MOMENTS = {"adam": ("exp_avg", "exp_avg_sq"), "rmsprop": ("square_avg",)}


def _param_group(cfg: OptimConfig) -> dict:
    """torch.optim's param group for `cfg` (every key torch 2.x writes, so torch.optim can load the state)."""
    common = {"lr": cfg.lr, "eps": cfg.eps, "weight_decay": 0, "maximize": False, "foreach": None}
    common |= {"capturable": False, "differentiable": False}
    if cfg.name == "adam":
        betas = (cfg.beta1, cfg.beta2)
        return {**common, "betas": betas, "amsgrad": False, "fused": None, "decoupled_weight_decay": False}
    return {**common, "alpha": cfg.alpha, "momentum": 0, "centered": False}


class FlatOptimizer:
    """Adam or RMSprop (`cfg.name`) updating `param`, one flat tensor, in place."""

    def __init__(self, param: torch.Tensor, cfg: OptimConfig) -> None:
        if cfg.name not in MOMENTS:
            raise ValueError(f"optim.name={cfg.name!r} is invalid: must be one of {', '.join(MOMENTS)}")
        self.name = cfg.name
        self.param = param
        self.group = _param_group(cfg)
        self.steps = 0
        self.state: dict[str, torch.Tensor] = {}
        """The moment tensors (see MOMENTS), created at the first step as torch.optim does."""

    @torch.no_grad()
    def step(self, grad: torch.Tensor, lr: float | None = None) -> None:
        """One update of the parameter with `grad`, as torch.optim's single-tensor `step()` would; `lr`, when
        given, replaces the configured rate for this step only (the server scales it with the batch)."""
        if not self.state:
            self.state = {k: torch.zeros_like(self.param) for k in MOMENTS[self.name]}
        self.steps += 1
        lr, eps = (self.group["lr"] if lr is None else lr), self.group["eps"]
        if self.name == "adam":
            beta1, beta2 = self.group["betas"]
            exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(eps)
            self.param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**self.steps))
        else:
            square_avg = self.state["square_avg"]
            square_avg.mul_(self.group["alpha"]).addcmul_(grad, grad, value=1 - self.group["alpha"])
            self.param.addcdiv_(grad, square_avg.sqrt().add_(eps), value=-lr)

    def state_dict(self) -> dict:
        """A copy of the state in torch.optim's format (param index 0); later steps do not change it."""
        state = {}
        if self.state:
            state[0] = {"step": torch.tensor(float(self.steps))} | {k: v.clone() for k, v in self.state.items()}
        return {"state": state, "param_groups": [{**self.group, "params": [0]}]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from `state_dict` (ours or torch.optim's): its step count and moments.

        The hyperparameters stay this optimizer's (the run's config), unlike torch.optim, which would take
        the saved ones: a run resumed with a new `optim.lr` uses the new rate.
        """
        saved = state_dict["state"].get(0, {})
        if not saved:
            self.steps, self.state = 0, {}
            return
        expected = {"step", *MOMENTS[self.name]}
        if set(saved) != expected:
            kinds = [name for name, moments in MOMENTS.items() if set(saved) == {"step", *moments}]
            kind = f"{kinds[0]}'s" if kinds else f"of an unknown optimizer (keys {sorted(saved)})"
            raise ValueError(
                f"the checkpoint's optimizer state is {kind}, but optim.name={self.name}: "
                f"resume with optim={kinds[0] if kinds else self.name}"
            )
        for key in MOMENTS[self.name]:
            if saved[key].shape != self.param.shape:
                raise ValueError(
                    f"the checkpoint's optimizer state has {saved[key].numel()} parameters, this model "
                    f"{self.param.numel()}: resume with the model config the checkpoint was written with"
                )
        self.steps = int(saved["step"])
        self.state = {k: saved[k].to(self.param.device, self.param.dtype, copy=True) for k in MOMENTS[self.name]}
