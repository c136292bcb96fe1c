"""The parameter server: master weights, one shared optimizer, versions; it applies pushed gradients.

This is mode=grad's (A3C: each gradient applied as it arrives); sync.py (one averaged step per
weight version) and learner.py (mode=data and central: it learns from pushed experience) build on it.

Callable in-process (tests, the serial runner) or behind RPC (`distributed/`), which calls `push` from
several threads at once; a lock serializes updates so each push sees consistent weights. The lead shard
(0) also holds the run's statistics and the stop policy (run_stats.py) and feeds them every valid push.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import torch
from torch import nn

from distributed_a3c.config import OptimConfig, ScaleConfig, ServerConfig, TrainConfig
from distributed_a3c.messages import WIRE_DTYPES, GradientPush, WeightsReply, completed
from distributed_a3c.rl.grads import flatten_parameters_
from distributed_a3c.rl.normalize import RunningMeanStd
from distributed_a3c.rl.scaling import scaled_lr, staleness_factor
from distributed_a3c.server.optim import FlatOptimizer
from distributed_a3c.server.run_stats import RunStats, StopPolicy
from distributed_a3c.server.sharding import merge_optimizer_states, shard_bounds, slice_optimizer_state
from distributed_a3c.server.validation import ExperienceSpec, gradient_error, push_error

log = logging.getLogger(__name__)


class ParameterServer:
    """Applies each worker's flat gradient to the master weights as it arrives.

    Once training has stopped, pushes are only answered (status "stopped"): the weights and counters
    stay as the final checkpoint and summary record them; rollouts still in flight are discarded.

    With `server.shards` > 1 this is shard `shard` of them: it owns and optimizes one slice of the flat
    vector (sharding.py) and takes gradients of that slice's size. Only the lead shard (0) decides when
    training stops; the others stop when told (`request_stop`).

    A push is validated whole before anything of it counts (validation.py): a rejected push changes no
    weight and no statistic.
    """

    def __init__(
        self,
        model: nn.Module,
        optim_cfg: OptimConfig,
        server_cfg: ServerConfig,
        train_cfg: TrainConfig,
        device: torch.device | str = "cpu",
        shard: int = 0,
        worker_ranks: range | None = None,
        env_steps_per_push: int | None = None,
        scale: ScaleConfig | None = None,
    ) -> None:
        self.model = model.to(device)
        self.flat = flatten_parameters_(self.model)
        if not 0 <= shard < server_cfg.shards:
            raise ValueError(f"shard={shard} is invalid: must be in [0, {server_cfg.shards})")
        self.shard = shard
        self.worker_ranks = worker_ranks
        """Ranks allowed to push (None: any)."""
        self.env_steps_per_push = env_steps_per_push
        """The most env steps one push may report (a worker's rollout_len x envs_per_worker; None: any)."""
        self.bounds = shard_bounds(self.flat.numel, server_cfg.shards)
        lo, hi = self.bounds[shard]
        # One flat tensor sharing storage with the model (this shard's slice of it): an optimizer step
        # updates one tensor.
        self._param = self.flat.weights[lo:hi]
        self.optimizer = FlatOptimizer(self._param, optim_cfg)
        self.cfg = server_cfg
        self.accumulate = max(1, server_cfg.accumulate)
        """Pushes summed into one optimizer step (build_server resolves server.accumulate=0, auto)."""
        self.base_lr = optim_cfg.lr
        self.scale = scale or ScaleConfig(rule="none")
        push = env_steps_per_push or 1
        self.push_env_steps = push
        """Env steps one push learns from: the unit of an optimizer step's batch."""
        self.reference_env_steps = self.scale.reference_batch or push
        self.device = torch.device(device)
        self.wire_dtype = WIRE_DTYPES[server_cfg.wire_dtype]
        self._lock = threading.Lock()
        self._busy_lock = threading.Lock()  # busy time is also counted outside _lock (mode=data, central)
        self._step_lock = threading.Lock()  # server.fold: one optimizer step at a time
        self._batches_applied = 0
        self._accum = torch.zeros_like(self._param.detach())
        self._accum_count = 0
        self._accum_factor = 0.0
        self._push_factor = 1.0
        """scale.staleness's factor of the push just taken (set by _take, with the lock held)."""
        self.version = 0
        self.pushes = 0
        self.dropped = 0
        self.rejected = 0
        self.busy_s = 0.0
        self.wire_bytes = 0
        """Tensor bytes received in valid pushes and sent in replies (gradients, experience, weights)."""
        self.ships_weights = True
        """False in mode=central: workers hold no model, replies carry no weights."""
        self.spec: ExperienceSpec | None = None
        """mode=data, central: the shape of the experience pushes carry (None: pushes carry gradients)."""
        self.stop_reason: str | None = None
        self.stats: RunStats | None = RunStats() if self.is_lead else None
        """The run's statistics (the lead only)."""
        self.stop_policy: StopPolicy | None = StopPolicy(train_cfg) if self.is_lead else None
        self.obs_stats: RunningMeanStd | None = None
        """Master observation statistics merged from every worker's pushes (env.normalize_obs); None until
        the first push that carries some."""

    @property
    def num_params(self) -> int:
        """Parameters of the whole model."""
        return self.flat.numel

    @property
    def shard_numel(self) -> int:
        """Parameters this server owns: its slice of the flat vector (all of it when unsharded)."""
        return self._param.numel()

    @property
    def is_lead(self) -> bool:
        return self.shard == 0

    # ----- the two calls a worker makes -------------------------------------------------------------
    def pull(self, rank: int | None = None) -> WeightsReply:
        with self._lock:
            stop = self.stop_reason is not None
            weights = self._wire_weights() if self.ships_weights else None
            return WeightsReply(self.version, weights, stop, "pulled", self._obs_stats_copy())

    def weights_snapshot(self) -> tuple[int, torch.Tensor, RunningMeanStd | None]:
        """(version, a float32 CPU copy of the whole flat weight vector, the observation statistics) as they
        are now. A sharded lead holds only its own slice fresh: the caller fills in the others."""
        with self._lock:
            return self.version, self.flat.weights.detach().to("cpu", torch.float32, copy=True), self._obs_stats_copy()

    def _wire_weights(self) -> torch.Tensor:
        """A copy of the weights in the wire dtype (the live tensor must not be serialized while it changes)."""
        weights = self._param.detach().to(self.wire_dtype, copy=True)
        self.wire_bytes += weights.nbytes
        return weights

    def push(self, req: GradientPush) -> WeightsReply:
        if self.cfg.fold:
            return self._push_folded(req)
        with self._lock, self._busy():
            if self.stop_reason is not None:
                return self._reply(req, "stopped")
            status = self._take(req)
            if status is None:
                status = self._apply(self._master_dtype(req.grads))
            return self._reply(req, status)

    def _reply(self, req: GradientPush, status: str) -> WeightsReply:
        """The answer to `req` (call with the lock held): version, fresh weights if they changed, stop."""
        self._check_stop()
        fresh = self.ships_weights and req.version != self.version
        weights = self._wire_weights() if fresh else None
        return WeightsReply(self.version, weights, self.stop_reason is not None, status, self._obs_stats_copy())

    def _push_folded(self, req: GradientPush) -> WeightsReply:
        """server.fold: pushes that arrive while an optimizer step runs are summed into the next step.

        A push joins the batch that is filling; the first of its pushes to get the step lock applies the
        whole batch in one optimizer step, the others find their batch applied and only reply.
        """
        with self._lock, self._busy():
            if self.stop_reason is not None:
                return self._reply(req, "stopped")
            status = self._take(req)
            if status is None:
                self._add_to_batch(self._master_dtype(req.grads))
                batch = self._batches_applied  # the batch now filling
        if status is None:
            with self._step_lock, self._lock, self._busy():
                if self._batches_applied == batch:  # else a push of this batch already applied it
                    if self.stop_reason is None:  # after the stop the weights are final (checkpointed)
                        self._step_batch()
                    else:
                        self._clear_batch()
                    self._batches_applied += 1
            status = "applied"
        with self._lock, self._busy():
            return self._reply(req, status)

    def push_async(self, req: GradientPush) -> torch.futures.Future[WeightsReply]:
        return completed(self.push(req))

    # ----- internals (call with the lock held) ---------------------------------------------------------
    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._busy_lock:
                self.busy_s += time.perf_counter() - t0

    def _take(self, req: GradientPush) -> str | None:
        """Validate `req` whole, then count it: 'rejected' or 'dropped' (too stale), or None to apply it."""
        shape = None if self.obs_stats is None else self.obs_stats.mean.shape
        error = push_error(
            req, self.version, self.shard_numel, self.worker_ranks, self.env_steps_per_push, shape, self.spec
        )
        if error is not None:
            self.rejected += 1
            if self.stats is not None:
                self.stats.record_rejected()
            log.warning("rejected push from rank %r: %s", getattr(req, "rank", "?"), error)
            return "rejected"
        self.pushes += 1
        self.wire_bytes += req.grads.nbytes if self.spec is None else req.experience.nbytes
        if req.obs_stats is not None:
            if self.obs_stats is None:
                self.obs_stats = RunningMeanStd.zeros(req.obs_stats.mean.shape)
            self.obs_stats.merge_(req.obs_stats)  # parallel-variance merge
        staleness = self.version - req.version
        dropped = staleness > self.cfg.max_staleness
        if self.stats is not None:
            self.stats.record_push(req, staleness, dropped)
        if dropped:
            self.dropped += 1
            return "dropped"
        self._push_factor = staleness_factor(staleness, self.scale.staleness_reference, self.scale.staleness)
        return None

    def _apply(self, grads: torch.Tensor) -> str:
        if self.accumulate == 1:
            self._step(grads, 1, self._push_factor)
            return "applied"
        self._add_to_batch(grads)
        if self._accum_count < self.accumulate:
            return "accumulated"
        self._step_batch()
        return "applied"

    def _add_to_batch(self, grads: torch.Tensor) -> None:
        self._accum.add_(grads)
        self._accum_count += 1
        self._accum_factor += self._push_factor

    def _step_batch(self) -> None:
        """One optimizer step for the pushes summed so far, at their mean staleness factor."""
        self._step(self._accum, self._accum_count, self._accum_factor / self._accum_count)
        self._clear_batch()

    def _clear_batch(self) -> None:
        self._accum.zero_()
        self._accum_count, self._accum_factor = 0, 0.0

    def _master_dtype(self, grads: torch.Tensor) -> torch.Tensor:
        """The pushed gradient as float32 on the server's device (no copy when it already is)."""
        if grads.dtype == torch.float32 and grads.device == self.device:
            return grads
        return grads.to(self.device, torch.float32, non_blocking=True)

    def step_lr(self, pushes: int) -> float:
        """The learning rate of an optimizer step that learns from `pushes` pushes (scale.rule)."""
        return scaled_lr(self.base_lr, pushes * self.push_env_steps, self.reference_env_steps, self.scale.rule)

    def _step(self, grads: torch.Tensor, pushes: int = 1, staleness_factor: float = 1.0) -> None:
        lr = self.step_lr(pushes) * staleness_factor
        self.optimizer.step(grads, lr)
        self.version += 1
        if self.stats is not None:
            self.stats.record_step(lr, pushes * self.push_env_steps)

    def _obs_stats_copy(self) -> RunningMeanStd | None:
        return None if self.obs_stats is None else self.obs_stats.copy()

    def _check_stop(self) -> None:
        if self.stop_reason is None and self.stop_policy is not None:
            self.stop_reason = self.stop_policy.reason(self.stats)

    # ----- the lead's run loop -----------------------------------------------------------------------
    def gradient_error(self, grads: object) -> str | None:
        """Why a pushed gradient cannot be applied, or None if it can."""
        return gradient_error(grads, self.shard_numel)

    def request_stop(self, reason: str) -> None:
        """Stop training from outside a push (a signal, the time limit on an idle server)."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason

    def poll_stop(self) -> str | None:
        with self._lock:
            self._check_stop()
            return self.stop_reason

    def counters(self) -> dict[str, float]:
        """This shard's version, pushes, dropped and rejected pushes and busy seconds."""
        with self._lock:
            return {
                "version": self.version,
                "pushes": self.pushes,
                "dropped": self.dropped,
                "rejected": self.rejected,
                "busy_s": self.busy_s,
                "wire_bytes": self.wire_bytes,
            }

    def snapshot(self) -> dict[str, float]:
        """The lead's metrics since the previous snapshot, keyed by the names documented in docs/METRICS.md."""
        assert self.stats is not None, "only the lead shard keeps the run's statistics"
        return self.stats.snapshot(self.counters())

    # ----- checkpointing ---------------------------------------------------------------------------
    def shard_stats(self) -> dict:
        """This shard's version, pushes and busy seconds (for the summary)."""
        c = self.counters()
        return {k: c[k] for k in ("version", "pushes", "busy_s", "wire_bytes")}

    def shard_state(self) -> dict:
        """This shard's slice of the weights, its optimizer state and counters (for the lead's checkpoint)."""
        with self._lock:
            state = {"weights": self._param.detach().cpu().clone(), "optimizer": self.optimizer.state_dict()}
        return {**state, **self.shard_stats()}

    def state_dict(self, other_shards: list[dict] = ()) -> dict:
        """The whole run's state in the unsharded format; a lead shard needs the other shards' states."""
        if len(other_shards) != len(self.bounds) - 1:
            raise ValueError(f"state_dict needs the states of {len(self.bounds) - 1} other shards")
        with self._lock:
            optimizer = self.optimizer.state_dict()
            if other_shards:
                for state, (lo, hi) in zip(other_shards, self.bounds[1:], strict=True):
                    self.flat.weights[lo:hi].copy_(state["weights"])
                sizes = [hi - lo for lo, hi in self.bounds]
                optimizer = merge_optimizer_states([optimizer] + [s["optimizer"] for s in other_shards], sizes)
            run = self.stats.state_dict() if self.stats is not None else {"env_steps": 0, "episodes": 0, "returns": []}
            return {
                "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "optimizer": optimizer,
                "version": self.version,
                **run,
                "counters": {"pushes": self.pushes, "dropped": self.dropped, "rejected": self.rejected},
                "obs_stats": None if self.obs_stats is None else self.obs_stats.state_dict(),
            }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint written with any number of shards: take this shard's slice of it."""
        with self._lock:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(slice_optimizer_state(state["optimizer"], *self.bounds[self.shard]))
            self.version = int(state["version"])
            if self.stats is not None:  # the lead's counters are the run's: they go on (other shards' restart)
                self.stats.load_state_dict(state)
                counters = state.get("counters", {})
                self.pushes = int(counters.get("pushes", 0))
                self.dropped = int(counters.get("dropped", 0))
                self.rejected = int(counters.get("rejected", 0))
            obs_stats = state.get("obs_stats")
            self.obs_stats = None if obs_stats is None else RunningMeanStd.from_state_dict(obs_stats)
