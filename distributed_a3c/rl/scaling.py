"""How the optimizer's step follows the job's size: pure functions of the batch and the worker count.

An optimizer step of the server applies the gradient of several pushes at once when it accumulates them
(`server.accumulate`), folds them (`server.fold`), averages every worker's (mode=sync) or learns from the
rollouts that queued (mode=data, central). Its batch, in env steps, then grows with the number of workers,
while `optim.lr` was tuned for one push. Adam and RMSprop normalize the gradient, so a batch K times larger
gives a step about sqrt(K) times more certain, not K times larger: the square-root rule (Malladi et al.
2022, "On the SDEs and scaling rules for adaptive gradient algorithms"; Krizhevsky 2014 for SGD's
linear rule) raises the learning rate by sqrt(K), and so keeps the distance travelled per env step.

With many workers, grad mode also sums `auto_accumulate(workers)` pushes into one step (as BA3C batches
per node): the server's optimizer steps and the replies' fresh weights no longer grow with the worker
count, and each step's gradient is computed on weights as few steps old as with a few workers.
"""

from __future__ import annotations

import math

STALENESS_RULES = ("sqrt", "inverse", "none")
"""How a push's learning rate follows its staleness beyond `scale.staleness_reference`."""

SCALING_RULES = ("auto", "sqrt", "linear", "none")
"""How the learning rate follows the batch of an optimizer step: `sqrt` (Adam's and RMSprop's rule),
`linear` (SGD's), `none` (optim.lr whatever the batch), or `auto` (`resolve_rule`)."""

WORKERS_PER_STEP = 4
"""`server.accumulate=0` (auto) in grad mode: one optimizer step per this many workers' pushes."""


def auto_accumulate(workers: int, workers_per_step: int = WORKERS_PER_STEP) -> int:
    """Pushes summed into one optimizer step when `server.accumulate` is auto (0): one per step up to
    `workers_per_step` workers, then one step for each `workers_per_step` workers' pushes."""
    if workers < 1 or workers_per_step < 1:
        raise ValueError(f"workers={workers} and workers_per_step={workers_per_step} must be >= 1")
    return max(1, workers // workers_per_step)


def pushes_to_reach(reference_env_steps: int, push_env_steps: int) -> int:
    """Pushes summed into one optimizer step so that it learns from at least `reference_env_steps` env steps
    (the batch optim.lr was tuned for): smaller pushes, from more workers with fewer envs each, are summed
    until a step is as large as the tuned one."""
    if reference_env_steps < 1 or push_env_steps < 1:
        raise ValueError(f"reference ({reference_env_steps}) and push ({push_env_steps}) env steps must be >= 1")
    return max(1, -(-reference_env_steps // push_env_steps))


def fitted_push_shape(rollout_len: int, envs: int, workers: int, step_env_steps: int | None) -> tuple[int, int]:
    """(rollout_len, envs) of each worker's push, so that a step that holds every worker's push (mode=sync's,
    which averages them; mode=data's, when every worker's rollout has queued) learns from at most about
    `step_env_steps` env steps instead of `workers` times a whole push: more workers then bring the same
    step sooner rather than a larger one. Envs are taken away first, down to one, so the rollout keeps the
    n-step horizon it was tuned with (shortening it instead, 32 synchronous CartPole workers of 16 envs x 5
    steps needed ~3x the experience of 4 envs x 20); only then does the rollout shorten. A push is never
    made larger; None keeps it whole."""
    if min(rollout_len, envs, workers) < 1 or (step_env_steps is not None and step_env_steps < 1):
        raise ValueError(
            f"rollout_len ({rollout_len}), envs ({envs}), workers ({workers}) and step_env_steps "
            f"({step_env_steps}) must be >= 1"
        )
    if step_env_steps is None or workers * rollout_len * envs <= step_env_steps:
        return rollout_len, envs
    share = step_env_steps // workers  # env steps each worker may bring to a step
    if share >= rollout_len:
        return rollout_len, share // rollout_len
    return max(1, share), 1


def resolve_rule(rule: str, mode: str, node_aggregate: bool) -> str:
    """`scale.rule` for a job: `auto` is `sqrt` where every optimizer step sums the pushes of several workers
    by design (mode=sync averages all of them; server.node_aggregate forwards a node's as one), and `none`
    where a step is one worker's push or what happened to queue (grad, data, central). Measured: sqrt cut
    what mode=sync needs to a third at 16 workers and a half at 2, and what node aggregation needs to a
    third at 8-16 workers; in grad mode it did not beat none."""
    if rule != "auto":
        return rule
    return "sqrt" if mode == "sync" or node_aggregate else "none"


def scaled_lr(lr: float, batch_env_steps: float, reference_env_steps: float, rule: str) -> float:
    """The learning rate of an optimizer step whose gradient comes from `batch_env_steps` env steps, when
    `lr` is the rate for `reference_env_steps`."""
    concrete = SCALING_RULES[1:]
    if rule not in concrete:
        raise ValueError(f"rule={rule!r} is invalid: must be one of {', '.join(concrete)} (resolve auto first)")
    if batch_env_steps <= 0 or reference_env_steps <= 0:
        raise ValueError(f"batch ({batch_env_steps}) and reference ({reference_env_steps}) env steps must be > 0")
    ratio = batch_env_steps / reference_env_steps
    if rule == "sqrt":
        return lr * math.sqrt(ratio)
    if rule == "linear":
        return lr * ratio
    return lr


def staleness_factor(staleness: int, reference: int, rule: str) -> float:
    """The learning-rate factor of a gradient computed on weights `staleness` versions older than those it
    is applied to: 1 up to `reference`, then ((reference + 1) / (staleness + 1)) to the power 1/2 (`sqrt`)
    or 1 (`inverse`, Zhang et al. 2016's staleness-aware step); `none` is always 1.

    N asynchronous workers apply N gradients computed on about the same weights one after another, each at
    the full rate: together they travel N steps where a synchronous batch of the same gradients would
    travel sqrt(N) under Adam's square-root rule, and the excess is what throws a many-worker run off.
    """
    if rule not in STALENESS_RULES:
        raise ValueError(f"rule={rule!r} is invalid: must be one of {', '.join(STALENESS_RULES)}")
    if staleness < 0 or reference < 0:
        raise ValueError(f"staleness ({staleness}) and reference ({reference}) must be >= 0")
    if rule == "none" or staleness <= reference:
        return 1.0
    ratio = (reference + 1) / (staleness + 1)
    return math.sqrt(ratio) if rule == "sqrt" else ratio
