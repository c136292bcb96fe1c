"""Actor-critic networks for gymnasium spaces, and `build_model` from the config. Architecture only: no
optimizer, no devices, no parallelism. Each satisfies `rl.a2c.ActorCritic`."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from distributed_a3c.config import Config
from distributed_a3c.envs import make_env_fn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
_ACTIVATION_FNS = {"tanh": torch.tanh, "relu": torch.relu}


class UnsupportedSpaceError(ValueError):
    """The observation or action space is one the package has no policy for."""


def _mlp(sizes: list[int], activation: str, out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [_orthogonal(nn.Linear(a, b), math.sqrt(2)), ACTIVATIONS[activation]()]
    layers.append(_orthogonal(nn.Linear(sizes[-1], out), out_gain))
    return nn.Sequential(*layers)


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _run_mlp(linears: list[nn.Linear], activation, x: torch.Tensor, last_activated: bool = False) -> torch.Tensor:
    """The MLP of `linears` (activation between layers) as plain functional calls.

    Same result as calling the nn.Sequential, at a third less time for CartPole-sized inputs, where
    every module call's Python overhead costs as much as its arithmetic (acting runs this every step).
    """
    for lin in linears[:-1]:
        x = activation(F.linear(x, lin.weight, lin.bias))
    x = F.linear(x, linears[-1].weight, linears[-1].bias)
    return activation(x) if last_activated else x


def _orthogonal(layer: nn.Linear | nn.Conv2d, gain: float) -> nn.Linear | nn.Conv2d:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _require_flat_box(obs_space: gym.Space, model_name: str) -> None:
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise UnsupportedSpaceError(
            f"observation space {obs_space} is not supported by model={model_name}: it needs a flat Box"
        )


def action_outputs(action_space: gym.Space) -> tuple[bool, int]:
    """(continuous?, size of the policy head) for a Discrete or 1-D Box action space."""
    if isinstance(action_space, gym.spaces.Discrete):
        return False, int(action_space.n)
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return True, int(action_space.shape[0])
    raise UnsupportedSpaceError(f"action space {action_space} is not supported: use Discrete or a 1-D Box")


class MLPActorCritic(nn.Module):
    """Separate (or shared) MLPs for the policy and the value; categorical or diagonal-Gaussian actions.

    forward(obs[N, obs_dim]) -> (distribution inputs [N, A], values [N]). A Gaussian policy has a
    state-independent log-std, as in the A3C/PPO continuous-control setups.
    """

    is_recurrent = False

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: list[int],
        activation: str = "tanh",
        shared_torso: bool = False,
    ) -> None:
        super().__init__()
        _require_flat_box(obs_space, "mlp")
        self.continuous, n_out = action_outputs(action_space)
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
        # Plain lists (not submodules): the forward pass below calls the layers functionally.
        self._act_fn = _ACTIVATION_FNS[activation]
        if shared_torso:
            self._torso_layers = _linears(self.torso)
        else:
            self._actor_layers, self._critic_layers = _linears(self.actor), _linears(self.critic)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = obs.float()
        if self.shared_torso:
            h = _run_mlp(self._torso_layers, self._act_fn, obs, last_activated=True)
            return self.policy_head(h), self.value_head(h).squeeze(-1)
        return _run_mlp(self._actor_layers, self._act_fn, obs), self.value(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.float()
        if self.shared_torso:
            h = _run_mlp(self._torso_layers, self._act_fn, obs, last_activated=True)
            return self.value_head(h).squeeze(-1)
        return _run_mlp(self._critic_layers, self._act_fn, obs).squeeze(-1)

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


# (out_channels, kernel, stride) per conv layer. nature: Mnih et al. 2015. a3c: the smaller torso of the
# A3C paper (Mnih et al. 2016, sec. 8), ~4x fewer multiply-adds: the faster choice on CPU.
CONV_TORSOS = {
    "nature": ((32, 8, 4), (64, 4, 2), (64, 3, 1)),
    "a3c": ((16, 8, 4), (32, 4, 2)),
}


class CNNActorCritic(nn.Module):
    """The Nature CNN (Mnih et al. 2015) as one torso shared by a policy and a value head; categorical actions.

    forward(obs[N, C, H, W] uint8 pixels) -> (logits [N, A], values [N]). Pixels are scaled to [0, 1]
    here, so observations can stay uint8 until they reach the device. `hidden_sizes` are the widths of
    the fully connected layers after the convolutions (Nature: [512]); `conv` names the conv layers
    (CONV_TORSOS).
    """

    is_recurrent = False

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: list[int],
        activation: str = "relu",
        shared_torso: bool = True,
        conv: str = "nature",
    ) -> None:
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 3 or min(obs_space.shape[1:]) < 36:
            raise UnsupportedSpaceError(
                f"observation space {obs_space} is not supported by model=cnn: it needs an image Box "
                "(channels, height, width) of at least 36x36, e.g. an ALE/... env with frame stacking"
            )
        if not isinstance(action_space, gym.spaces.Discrete):
            raise UnsupportedSpaceError(f"action space {action_space} is not supported by model=cnn: use Discrete")
        if not shared_torso:
            raise ValueError("model.shared_torso=False is invalid: must be true for model=cnn")
        self.continuous = False
        if conv not in CONV_TORSOS:
            raise ValueError(f"model.conv={conv!r} is invalid: must be one of {', '.join(CONV_TORSOS)}")
        conv_layers: list[nn.Module] = []
        in_ch = obs_space.shape[0]
        for out_ch, kernel, stride in CONV_TORSOS[conv]:
            conv_layers += [_orthogonal(nn.Conv2d(in_ch, out_ch, kernel, stride=stride), math.sqrt(2)), nn.ReLU()]
            in_ch = out_ch
        convs = nn.Sequential(*conv_layers, nn.Flatten())
        with torch.no_grad():
            flat = convs(torch.zeros(1, *obs_space.shape)).shape[1]
        sizes = [flat, *hidden_sizes]
        layers: list[nn.Module] = [convs]
        for a, b in zip(sizes[:-1], sizes[1:], strict=False):
            layers += [_orthogonal(nn.Linear(a, b), math.sqrt(2)), ACTIVATIONS[activation]()]
        self.torso = nn.Sequential(*layers)
        self.policy_head = _orthogonal(nn.Linear(sizes[-1], int(action_space.n)), 0.01)
        self.value_head = _orthogonal(nn.Linear(sizes[-1], 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.torso(obs / 255.0)
        return self.policy_head(h), self.value_head(h).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.torso(obs / 255.0)).squeeze(-1)

    def sample(self, dist_inputs: torch.Tensor) -> torch.Tensor:
        """Gumbel-max sample of Categorical(logits=dist_inputs)."""
        return (dist_inputs - torch.empty_like(dist_inputs).exponential_().log()).argmax(-1)

    def distribution(self, dist_inputs: torch.Tensor) -> Distribution:
        return Categorical(logits=dist_inputs, validate_args=False)


class LSTMActorCritic(nn.Module):
    """A3C's recurrent agent (Mnih et al. 2016, sec. 5.1): MLP encoder -> LSTM cell -> policy and value heads.

    The recurrent state (h, c), each [B, lstm_size], belongs to the caller, one row per env. `starts[B]`
    marks observations that begin an episode: their row of the state is zeroed before the observation
    is read, so nothing leaks from one episode into the next. `step` acts on one time step;
    `forward_sequence` replays a whole rollout [T, B] from the state it started with, so backward runs
    through all T steps (truncated BPTT over the rollout). Actions: categorical or diagonal Gaussian with
    a state-independent log-std, exactly as `MLPActorCritic`.
    """

    is_recurrent = True

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        hidden_sizes: list[int],
        activation: str = "tanh",
        shared_torso: bool = True,
        lstm_size: int = 128,
    ) -> None:
        super().__init__()
        _require_flat_box(obs_space, "lstm")
        self.continuous, n_out = action_outputs(action_space)
        if not shared_torso:
            raise ValueError("model.shared_torso=False is invalid: must be true for model=lstm")
        sizes = [int(obs_space.shape[0]), *hidden_sizes]
        self.encoder = _mlp(sizes[:-1], activation, sizes[-1], math.sqrt(2))
        self.encoder.append(ACTIVATIONS[activation]())
        self.lstm = nn.LSTMCell(sizes[-1], lstm_size)
        nn.init.orthogonal_(self.lstm.weight_ih)
        nn.init.orthogonal_(self.lstm.weight_hh)
        nn.init.zeros_(self.lstm.bias_ih)
        nn.init.zeros_(self.lstm.bias_hh)
        self.lstm_size = lstm_size
        self.policy_head = _orthogonal(nn.Linear(lstm_size, n_out), 0.01)
        self.value_head = _orthogonal(nn.Linear(lstm_size, 1), 1.0)
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(n_out))

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (h, c) for `batch_size` envs."""
        h = torch.zeros(batch_size, self.lstm_size, device=device)
        return h, torch.zeros_like(h)

    def forward_sequence(
        self, obs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """obs [T, B, obs_dim], state ([B, H], [B, H]), starts [T, B] bool
        -> (distribution inputs [T, B, A], values [T, B], the state after step T-1)."""
        T, B = starts.shape
        x = self.encoder(obs.reshape(T * B, -1).float()).reshape(T, B, -1)
        keep = (~starts.bool()).unsqueeze(-1).to(x.dtype)
        h, c = state
        hs = []
        for t in range(T):
            h, c = self.lstm(x[t], (h * keep[t], c * keep[t]))
            hs.append(h)
        out = torch.stack(hs)
        return self.policy_head(out), self.value_head(out).squeeze(-1), (h, c)

    def step(
        self, obs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One time step: obs [B, obs_dim], starts [B] -> (distribution inputs [B, A], values [B], next state)."""
        dist_inputs, values, state = self.forward_sequence(obs.unsqueeze(0), state, starts.unsqueeze(0))
        return dist_inputs[0], values[0], state

    forward = step
    # The same action heads as the MLP: Gumbel-max / Gaussian sampling and the matching distributions.
    sample = MLPActorCritic.sample
    distribution = MLPActorCritic.distribution


def build_policy(name: str, obs_space: gym.Space, action_space: gym.Space, **kwargs) -> nn.Module:
    """The actor-critic named by `model.name` for these spaces."""
    if name == "mlp":
        return MLPActorCritic(obs_space, action_space, **kwargs)
    if name == "cnn":
        return CNNActorCritic(obs_space, action_space, **kwargs)
    if name == "lstm":
        return LSTMActorCritic(obs_space, action_space, **kwargs)
    raise ValueError(f"model.name={name!r} is invalid: must be one of mlp, cnn, lstm")


def action_to_env(action: torch.Tensor, action_space: gym.Space) -> np.ndarray:
    """Actions as the env wants them: clipped to the bounds for a Box (the log-prob keeps the raw sample)."""
    a = action.cpu().numpy()
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(a, action_space.low, action_space.high)
    return a


def build_model(cfg: Config, obs_space: gym.Space, action_space: gym.Space) -> nn.Module:
    """The actor-critic `cfg.model` describes, for these spaces."""
    m = cfg.model
    extra = {"lstm_size": m.lstm_size} if m.name == "lstm" else {"conv": m.conv} if m.name == "cnn" else {}
    return build_policy(
        m.name,
        obs_space,
        action_space,
        hidden_sizes=list(m.hidden_sizes),
        activation=m.activation,
        shared_torso=m.shared_torso,
        **extra,
    )


def spaces_error(cfg: Config) -> str | None:
    """Why `cfg.model` has no policy for the spaces of `cfg.env` (one line), or None; builds one env."""
    try:
        build_model(cfg, *env_spaces(cfg))
    except UnsupportedSpaceError as e:
        return f"env.id={cfg.env.id!r} is unsupported: {e}"
    return None


def env_spaces(cfg: Config) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of one env of `cfg.env` (as a worker's envs have them)."""
    env = make_env_fn(cfg.env)()
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
