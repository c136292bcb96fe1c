"""Evaluation during training (`eval.*`): the current weights play whole episodes on envs of their own.

The lead hands `PolicyEvaluator.evaluate` a copy of the weights it holds, with the env step they were
reached at; the evaluator plays `eval.episodes` episodes side by side in one vector env, one per env, and
returns their returns. Each evaluation is seeded anew (`eval_seed`), apart from every training env, and
samples actions from a generator of its own, so an evaluation never draws from the training's random
streams and the same weights and seed give the same episodes. Atari episodes are whole games.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from distributed_a3c.config import Config
from distributed_a3c.envs import episode_ends, is_next_step_autoreset, make_vector_env
from distributed_a3c.models import action_to_env, build_model
from distributed_a3c.rl.grads import flatten_parameters_
from distributed_a3c.rl.normalize import RunningMeanStd

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 10_000_000
"""Training env i of rank r is seeded seed + 1000 r + i; evaluations start this far above (ranks < 10,000)."""


def eval_seed(seed: int, evaluation: int) -> int:
    """Seed of env 0 of the `evaluation`-th evaluation (env i: + i) of a run with base seed `seed`."""
    return seed + EVAL_SEED_OFFSET + 1000 * evaluation


@dataclass
class EvalResult:
    """One evaluation: the returns and lengths of its episodes, and which weights played them."""

    global_step: int
    """Env steps (all workers) at which the evaluated weights were taken."""
    version: int
    """Their weight version."""
    returns: list[float]
    lengths: list[int]
    seconds: float = 0.0
    """Wall time the evaluation took."""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    def row(self) -> dict[str, float]:
        """The metric row of this evaluation (docs/METRICS.md), keyed by the env step of its weights."""
        r = np.asarray(self.returns, dtype=np.float64)
        return {
            "global_step": self.global_step,
            "eval/mean_return": float(r.mean()),
            "eval/std_return": float(r.std()),
            "eval/min_return": float(r.min()),
            "eval/max_return": float(r.max()),
            "eval/mean_length": float(np.mean(self.lengths)),
            "eval/episodes": len(self.returns),
            "eval/version": self.version,
            "eval/seconds": self.seconds,
        }


def greedy_action(model: torch.nn.Module, dist_inputs: torch.Tensor) -> torch.Tensor:
    """The most likely action: the Gaussian's mean, or the argmax of the logits."""
    return dist_inputs if getattr(model, "continuous", False) else dist_inputs.argmax(-1)


def sample_action(model: torch.nn.Module, dist_inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An action drawn from the policy with `generator` (the model's own `sample` draws from torch's global one)."""
    if getattr(model, "continuous", False):
        noise = torch.randn(dist_inputs.shape, generator=generator, dtype=dist_inputs.dtype)
        return dist_inputs + model.log_std.exp() * noise
    uniform = torch.rand(dist_inputs.shape, generator=generator, dtype=dist_inputs.dtype)
    return (dist_inputs - (-uniform.clamp_min(1e-20).log()).log()).argmax(-1)  # Gumbel-max


class PolicyEvaluator:
    """Plays `cfg.eval.episodes` whole episodes with given weights, one per env of one vector env (CPU)."""

    def __init__(self, cfg: Config) -> None:
        self.episodes = cfg.eval.episodes
        self.greedy = cfg.eval.greedy
        self.seed = cfg.seed
        env_cfg = copy.deepcopy(cfg.env)
        env_cfg.atari.terminal_on_life_loss = False  # whole games, as a3c-eval plays them
        if cfg.eval.max_episode_steps is not None:
            env_cfg.max_episode_steps = cfg.eval.max_episode_steps
        if env_cfg.vectorization == "async":  # no subprocesses forked from the lead, whose RPC threads run
            env_cfg.vectorization = "sync"
        self.envs = make_vector_env(env_cfg, self.episodes, eval_seed(cfg.seed, 0))
        self.next_step_autoreset = is_next_step_autoreset(self.envs)
        with torch.random.fork_rng():  # its weights are loaded at each evaluation: leave the run's RNG alone
            self.model = build_model(cfg, self.envs.single_observation_space, self.envs.single_action_space)
        self.model.eval()
        self.flat = flatten_parameters_(self.model)
        self.action_space = self.envs.single_action_space

    def close(self) -> None:
        self.envs.close()

    @torch.inference_mode()
    def evaluate(
        self,
        weights: torch.Tensor,
        obs_stats: RunningMeanStd | None,
        evaluation: int,
        global_step: int,
        version: int,
    ) -> EvalResult:
        """The `evaluation`-th evaluation (it picks the seed) of flat `weights`, reached at `global_step`."""
        t0 = time.perf_counter()
        self.flat.load_(weights)
        n, seed = self.episodes, eval_seed(self.seed, evaluation)
        generator = torch.Generator().manual_seed(seed)
        obs, _ = self.envs.reset(seed=seed if self.next_step_autoreset else [seed + i for i in range(n)])
        returns = np.full(n, math.nan)
        lengths = np.zeros(n, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        recurrent = self.model.is_recurrent
        state = self.model.initial_state(n) if recurrent else None
        starts = torch.ones(n, dtype=torch.bool)
        while not done.all():
            x = torch.as_tensor(obs_stats.normalize(obs) if obs_stats is not None else np.asarray(obs))
            if recurrent:
                dist_inputs, _, state = self.model.step(x, state, starts)
                starts = torch.zeros(n, dtype=torch.bool)
            else:
                dist_inputs, _ = self.model(x)
            if self.greedy:
                action = greedy_action(self.model, dist_inputs)
            else:
                action = sample_action(self.model, dist_inputs, generator)
            obs, _, _, _, info = self.envs.step(action_to_env(action, self.action_space))
            ends = episode_ends(info)
            if ends is not None:
                ended, ret, length = ends
                first = ended & ~done  # each env counts its first episode only
                returns[first], lengths[first] = ret[first], length[first]
                done |= ended
        return EvalResult(global_step, version, returns.tolist(), lengths.tolist(), time.perf_counter() - t0)


Snapshot = Callable[[], tuple[int, torch.Tensor, RunningMeanStd | None]]
"""() -> (weight version, flat float32 weights, observation statistics) of the lead, as they are now."""


class PeriodicEvaluator:
    """Evaluates every `eval.interval_env_steps` env steps: the weights are taken once that many are done,
    then at each multiple (one multiple per poll, however many were passed since the last).

    `background=True` plays on a thread of its own, so the lead's loop (logging, checkpoints, signals)
    never waits for an evaluation; weights taken while one plays wait in a queue of `eval.max_pending`
    (one due when it is full is skipped), so that slow evaluations still report on the interval's grid.
    False plays in the caller's thread (the serial runner, deterministic).
    """

    def __init__(self, cfg: Config, background: bool, evaluations_done: int = 0, after_step: int = 0) -> None:
        """`evaluations_done`, `after_step`: a resumed run's count of evaluations and env steps so far."""
        self.evaluator = PolicyEvaluator(cfg)
        self.interval = cfg.eval.interval_env_steps
        self.max_pending = cfg.eval.max_pending
        self.count = evaluations_done
        self.skipped = 0
        self._next_step = (after_step // self.interval + 1) * self.interval
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="eval") if background else None
        self._running: Future[EvalResult] | None = None
        self._queue: deque[tuple] = deque()
        self._done: list[EvalResult] = []

    def poll(self, global_step: int, snapshot: Snapshot) -> list[EvalResult]:
        """The evaluations finished since the last poll, oldest first; takes the weights when they are due."""
        if self._running is not None and self._running.done():
            self._collect()
        if global_step >= self._next_step:
            self._next_step = (global_step // self.interval + 1) * self.interval
            if len(self._queue) < self.max_pending:
                version, weights, obs_stats = snapshot()
                self._queue.append((weights, obs_stats, self.count, global_step, version))
                self.count += 1
            else:
                self.skipped += 1
        if self._pool is None:
            while self._queue:
                self._done.append(self.evaluator.evaluate(*self._queue.popleft()))
        elif self._running is None and self._queue:
            self._running = self._pool.submit(self.evaluator.evaluate, *self._queue.popleft())
        done, self._done = self._done, []
        return done

    def _collect(self) -> None:
        future, self._running = self._running, None
        try:
            self._done.append(future.result())
        except Exception as e:  # an evaluation must never take training down
            log.warning("evaluation failed: %s: %s", type(e).__name__, e)

    def drain(self, until: Callable[[EvalResult], bool], deadline_s: float) -> list[EvalResult]:
        """The evaluation still running and then the queued weights, played in the caller's thread in the
        order taken, until one satisfies `until` or `deadline_s` (monotonic) passes: what the run's own
        stop depends on, when training ended before its evaluations caught up."""
        if self._running is not None:
            self._collect()
        done, self._done = self._done, []
        while self._queue and not any(until(r) for r in done) and time.monotonic() < deadline_s:
            done.append(self.evaluator.evaluate(*self._queue.popleft()))
        return done

    def close(self) -> None:
        """Wait for an evaluation still running (its result and the queued weights are dropped), then free
        the envs."""
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.evaluator.close()
