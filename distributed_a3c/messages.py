"""What workers and the parameter server say to each other (plain data; RPC pickles these): a worker
sends a `GradientPush` (mode=grad, sync) or an `ExperiencePush` (mode=data, central); every push and pull
is answered with a `WeightsReply`; mode=central's workers ask the server's predictor to act (`ActionReply`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from distributed_a3c.rl.experience import Experience
from distributed_a3c.rl.normalize import RunningMeanStd

WIRE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""`server.wire_dtype` names -> the dtype gradients and weights travel in."""


@dataclass
class GradientPush:
    """One rollout's gradient and what the rollout saw (env steps, finished episodes, statistics)."""

    rank: int
    """Global rank of the worker that computed the gradient."""
    version: int
    """Version of the weights the gradient was computed on."""
    grads: torch.Tensor
    """The whole gradient as one flat contiguous tensor."""
    env_steps: int
    """Env steps taken for this rollout (rollout_len x envs_per_worker)."""
    episode_returns: list[float] = field(default_factory=list)
    """Returns of the episodes this worker finished since its last push."""
    episode_lengths: list[int] = field(default_factory=list)
    """Lengths of those episodes, in env steps (charts/mean_length_100)."""
    stats: dict[str, float] = field(default_factory=dict)
    """Losses, gradient norm and time split of this rollout, for the logs."""
    obs_stats: RunningMeanStd | None = None
    """Moments of the raw observations of this rollout (env.normalize_obs), for the server to merge."""
    shard_versions: list[int] | None = None
    """server.shards > 1: the version of each shard's slice of the weights the gradient was computed on."""


@dataclass
class ExperiencePush:
    """One rollout's experience (mode=data, central): the server computes the gradient from it."""

    rank: int
    """Global rank of the worker that collected it."""
    version: int
    """The oldest weight version that chose an action in it (staleness is counted from it)."""
    experience: Experience
    """Observations, actions, rewards, episode ends and bootstrap observations: no values."""
    env_steps: int
    """Env steps taken for this rollout (rollout_len x envs_per_worker)."""
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    """The worker's time split and memory, for the logs (the losses are the learner's)."""
    obs_stats: RunningMeanStd | None = None
    acted_versions: list[int] | None = None
    """mode=central: the weight version that chose each step's actions (for GA3C's policy lag)."""


@dataclass
class ActionReply:
    """mode=central: the predictor's actions for a worker's observations."""

    version: int
    """The weight version that chose them."""
    actions: torch.Tensor | None
    """One action per observation sent (None when they were rejected)."""
    log_probs: torch.Tensor | None = None
    """log mu(a|x) of each action under the weights that chose it, for V-trace (None when rejected)."""
    stop: bool = False
    """True once training is over."""
    error: str | None = None
    """Why the observations were rejected (wrong shape, dtype or non-finite values), else None."""


@dataclass
class WeightsReply:
    """The server's answer to a push or a pull: its weight version, the weights if the worker lacks them,
    whether training is over, and the master observation statistics."""

    version: int
    """The server's weight version after handling the push."""
    weights: torch.Tensor | None
    """Fresh flat weights, or None when the worker already holds this version."""
    stop: bool = False
    """True once training is over: the worker should exit."""
    status: str = "applied"
    """applied | accumulated | dropped (too stale) | rejected (invalid) | pulled | stopped (after the stop)."""
    obs_stats: RunningMeanStd | None = None
    """The server's merged observation statistics, which every worker normalizes with (env.normalize_obs)."""
    shard_versions: list[int] | None = None
    """server.shards > 1: each shard's version after the push (the worker sends them back next time)."""


class ParameterStore(Protocol):
    """What a worker needs from a parameter server: the in-process one or a remote one over RPC."""

    def pull(self, rank: int | None = None) -> WeightsReply:
        """The current weights; `rank`: the worker asking, which the reply may tell to stop."""
        ...

    def push(self, request: GradientPush | ExperiencePush) -> WeightsReply: ...

    def push_async(self, request: GradientPush | ExperiencePush) -> torch.futures.Future[WeightsReply]:
        """Send a push without waiting; `.wait()` on the result gives the reply."""
        ...


class Predictor(Protocol):
    """mode=central: what a worker without a model asks to act."""

    def act(self, rank: int, obs: torch.Tensor) -> ActionReply: ...


def completed(reply: WeightsReply) -> torch.futures.Future[WeightsReply]:
    """An already-finished future, for stores that answer synchronously."""
    future: torch.futures.Future[WeightsReply] = torch.futures.Future()
    future.set_result(reply)
    return future
