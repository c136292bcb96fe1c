"""Actor-critic networks. Architecture only: no optimizer, no devices, no parallelism."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class UnsupportedSpaceError(ValueError):
    """The observation or action space is one the package has no policy for."""


def _mlp(sizes: list[int], activation: str, out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [_orthogonal(nn.Linear(a, b), math.sqrt(2)), ACTIVATIONS[activation]()]
    layers.append(_orthogonal(nn.Linear(sizes[-1], out), out_gain))
    return nn.Sequential(*layers)


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class MLPActorCritic(nn.Module):
    """Separate (or shared) MLPs for the policy and the value; categorical or diagonal-Gaussian actions.

    forward(obs[N, obs_dim]) -> (distribution inputs [N, A], values [N]). A Gaussian policy has a
    state-independent log-std, as in the A3C/PPO continuous-control setups.
    """

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: list[int],
        activation: str = "tanh",
        shared_torso: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise UnsupportedSpaceError(
                f"observation space {obs_space} is not supported by model=mlp: it needs a flat Box"
            )
        self.continuous = isinstance(action_space, gym.spaces.Box)
        if isinstance(action_space, gym.spaces.Discrete):
            n_out = int(action_space.n)
        elif self.continuous and len(action_space.shape) == 1:
            n_out = int(action_space.shape[0])
        else:
            raise UnsupportedSpaceError(f"action space {action_space} is not supported: use Discrete or a 1-D Box")
        obs_dim = int(obs_space.shape[0])
        sizes = [obs_dim, *hidden_sizes]
        self.shared_torso = shared_torso
        if shared_torso:
            self.torso = _mlp(sizes[:-1], activation, sizes[-1], math.sqrt(2))
            self.torso.append(ACTIVATIONS[activation]())
            self.policy_head = _orthogonal(nn.Linear(sizes[-1], n_out), 0.01)
            self.value_head = _orthogonal(nn.Linear(sizes[-1], 1), 1.0)
        else:
            self.actor = _mlp(sizes, activation, n_out, 0.01)
            self.critic = _mlp(sizes, activation, 1, 1.0)
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(n_out))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = obs.float()
        if self.shared_torso:
            h = self.torso(obs)
            return self.policy_head(h), self.value_head(h).squeeze(-1)
        return self.actor(obs), self.critic(obs).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.float()
        if self.shared_torso:
            return self.value_head(self.torso(obs)).squeeze(-1)
        return self.critic(obs).squeeze(-1)

    def sample(self, dist_inputs: torch.Tensor) -> torch.Tensor:
        """Draw actions; cheaper than building a Distribution on the acting hot path."""
        if self.continuous:
            return dist_inputs + self.log_std.exp() * torch.randn_like(dist_inputs)
        # Gumbel-max: argmax(logits + Gumbel noise) is a sample of Categorical(logits).
        return (dist_inputs - torch.empty_like(dist_inputs).exponential_().log()).argmax(-1)

    def distribution(self, dist_inputs: torch.Tensor) -> Distribution:
        if self.continuous:
            std = self.log_std.exp().expand_as(dist_inputs)
            return Independent(Normal(dist_inputs, std, validate_args=False), 1, validate_args=False)
        return Categorical(logits=dist_inputs, validate_args=False)


def build_policy(name: str, obs_space: gym.Space, action_space: gym.Space, **kwargs) -> nn.Module:
    """The actor-critic named by `model.name` for these spaces."""
    if name == "mlp":
        return MLPActorCritic(obs_space, action_space, **kwargs)
    raise ValueError(f"model.name={name!r} is invalid: must be one of mlp")


def action_to_env(action: torch.Tensor, action_space: gym.Space) -> np.ndarray:
    """Actions as the env wants them: clipped to the bounds for a Box (the log-prob keeps the raw sample)."""
    a = action.cpu().numpy()
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(a, action_space.low, action_space.high)
    return a
