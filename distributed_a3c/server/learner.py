"""The parameter server of mode=data and mode=central: workers send experience, this server learns from it.

Lapan's data parallelism (Deep RL Hands-On, ch. 13) and GA3C's trainer: the A2C loss and its gradient are
computed here, on the server's device, under the current weights. Rollouts that arrive while a step runs
queue up and are learned from together, in one forward and one backward pass. mode=central adds GA3C's
predictor: workers hold no model and ask `act` for each step's actions (predictor.py batches those asks).
"""

from __future__ import annotations

import copy
import logging
import threading

import torch
from torch import nn

from distributed_a3c.config import AlgoConfig, OptimConfig, ScaleConfig, ServerConfig, TrainConfig
from distributed_a3c.messages import ActionReply, ExperiencePush, WeightsReply
from distributed_a3c.rl.a2c import A2CHyperparameters, a2c_step
from distributed_a3c.rl.experience import concat, evaluate
from distributed_a3c.rl.grads import clip_grad_norm_
from distributed_a3c.server.params import ParameterServer
from distributed_a3c.server.validation import ExperienceSpec, observations_error

log = logging.getLogger(__name__)


class ExperienceServer(ParameterServer):
    """Learns from pushed experience; one optimizer step per batch of the rollouts queued when it begins.

    `central`: workers hold no model (replies carry no weights) and act through `act`.
    """

    def __init__(
        self,
        model: nn.Module,
        optim_cfg: OptimConfig,
        server_cfg: ServerConfig,
        train_cfg: TrainConfig,
        algo_cfg: AlgoConfig,
        spec: ExperienceSpec,
        device: torch.device | str = "cpu",
        worker_ranks: range | None = None,
        central: bool = False,
        scale: ScaleConfig | None = None,
    ) -> None:
        per_push = spec.rollout_len * spec.envs
        super().__init__(model, optim_cfg, server_cfg, train_cfg, device, 0, worker_ranks, per_push, scale)
        self.spec = spec
        self.ships_weights = not central
        self.hyperparameters = A2CHyperparameters(
            algo_cfg.gamma,
            algo_cfg.gae_lambda,
            algo_cfg.value_coef,
            algo_cfg.entropy_coef,
            algo_cfg.normalize_advantages,
            algo_cfg.vtrace,
        )
        self.max_grad_norm = algo_cfg.max_grad_norm
        self._queue: list[ExperiencePush] = []
        self._learn_lock = threading.Lock()  # one learner step at a time; pushes queue meanwhile
        # The acting copy of mode=central: the predictor reads it while a learner step writes the master.
        self._acting_model = copy.deepcopy(self.model) if central else None
        self._acting_version = -1
        self._act_lock = threading.Lock()

    def push(self, req: ExperiencePush) -> WeightsReply:
        with self._lock, self._busy():
            if self.stop_reason is not None:
                return self._reply(req, "stopped")
            status = self._take(req)
            if status is None:
                self._queue.append(req)
        if status is None:
            self._learn_queued()
            status = "applied"
        with self._lock, self._busy():
            return self._reply(req, status)

    def _learn_queued(self) -> None:
        """Learn from every rollout queued so far, unless the step before took this push's rollout already."""
        with self._learn_lock, self._busy():
            with self._lock:
                batch, self._queue = self._queue, []
                stopped = self.stop_reason is not None
            if not batch or stopped:  # after the stop the weights are final (checkpointed)
                return
            experience = concat([req.experience.to(self.device) for req in batch])
            rollout = evaluate(self.model, experience)
            loss, stats = a2c_step(self.model, rollout, self.hyperparameters)
            self.flat.zero_grad_()
            loss.backward()
            stats["losses/grad_norm"] = clip_grad_norm_(self.flat.grads, self.max_grad_norm)
            with self._lock:
                lags = [self.version - _mean(req.acted_versions or [req.version]) for req in batch]
                self._step(self.flat.grads, len(batch))
                if self.stats is not None:
                    self.stats.record_learner(stats, len(batch), lags)

    # ----- mode=central: the predictor's forward pass ------------------------------------------------
    def observations_error(self, rank: int, obs: object) -> str | None:
        """Why a worker's request for actions is rejected (counted, logged), or None."""
        error = observations_error(rank, obs, self.spec, self.worker_ranks)
        if error is not None:
            with self._lock:
                self.rejected += 1
                if self.stats is not None:
                    self.stats.record_rejected()
            log.warning("rejected observations from rank %r: %s", rank, error)
        return error

    @torch.inference_mode()
    def act(self, rank: int, obs: torch.Tensor) -> ActionReply:
        """Actions for `obs` [N, ...] from the latest weights (one forward pass), with their version."""
        assert self._acting_model is not None, "act() needs mode=central"
        with self._act_lock, self._busy():
            with self._lock:
                if self._acting_version != self.version:
                    for acting, master in zip(self._acting_model.parameters(), self.model.parameters(), strict=True):
                        acting.copy_(master)
                    self._acting_version = self.version
                stop = self.stop_reason is not None
            dist_inputs, _ = self._acting_model(obs.to(self.device))
            actions = self._acting_model.sample(dist_inputs)
            log_probs = self._acting_model.distribution(dist_inputs).log_prob(actions).float().cpu()
            actions = actions.cpu()
            with self._lock:
                self.wire_bytes += obs.nbytes + actions.nbytes + log_probs.nbytes
            return ActionReply(self._acting_version, actions, log_probs, stop)


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)
