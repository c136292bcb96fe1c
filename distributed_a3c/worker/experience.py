"""The worker of mode=data and mode=central: it pushes what happened, not a gradient.

mode=data (Lapan's data parallelism) acts with its own copy of the weights, like a gradient worker, and
sends the rollout's experience; the server computes the gradient. mode=central (GA3C) holds no model at
all: the server's predictor chooses every step's actions.
"""

from __future__ import annotations

import torch

from distributed_a3c.config import Config
from distributed_a3c.messages import ExperiencePush, ParameterStore
from distributed_a3c.rl.experience import Experience
from distributed_a3c.worker.gradient import Worker


class ExperienceWorker(Worker):
    def __init__(self, cfg: Config, rank: int, store: ParameterStore, device: torch.device | str = "cpu"):
        self.central = cfg.mode == "central"
        self._final_obs: list[torch.Tensor] = []
        self._final_index: list[tuple[int, int]] = []
        self._acted_versions: list[int] = []
        self._log_probs: list[torch.Tensor] = []  # log mu(a|x) of each step's actions, for V-trace
        super().__init__(cfg, rank, store, device)

    def prepare(self) -> ExperiencePush:
        """Collect a rollout: the push carries its experience, which the server values and learns from."""
        self._final_obs, self._final_index, self._acted_versions, self._log_probs = [], [], [], []
        r = self.collect()
        final_obs = torch.cat(self._final_obs) if self._final_obs else r.obs.new_empty((0, *r.obs.shape[2:]))
        final_index = torch.tensor(self._final_index, dtype=torch.int64).reshape(-1, 2)
        experience = Experience(
            r.obs,
            r.actions,
            r.rewards,
            r.terminated,
            r.truncated,
            self.obs.clone(),
            final_obs,
            final_index,
            r.valid,
            torch.stack(self._log_probs) if self._log_probs else None,
        )
        acted = self._acted_versions if self.central else None
        return ExperiencePush(
            rank=self.rank,
            version=min(acted) if acted else self.version,
            experience=experience.to("cpu"),
            env_steps=self.cfg.worker.push_env_steps,
            stats=self._time_stats(),
            acted_versions=acted,
            **self._take_reports(),
        )

    def _build_model(self) -> torch.nn.Module | None:
        return None if self.central else super()._build_model()

    def _act(self, t: int) -> torch.Tensor:
        if not self.central:
            return super()._act(t)
        reply = self.store.act(self.rank, self.obs)
        if reply.error is not None:
            raise RuntimeError(f"the server rejected this worker's observations: {reply.error}")
        self._acted_versions.append(reply.version)
        if self.cfg.algo.vtrace:
            self._log_probs.append(reply.log_probs.to(self.device))
        return reply.actions.to(self.device)

    def _record_actions(self, dist_inputs: torch.Tensor, actions: torch.Tensor) -> None:
        if self.cfg.algo.vtrace:
            self._log_probs.append(self.model.distribution(dist_inputs).log_prob(actions).float())

    def _bootstrap_value(self) -> torch.Tensor:
        return torch.zeros(self.cfg.worker.envs_per_worker, device=self.device)  # the learner values next_obs

    def _record_time_limit_cuts(self, t: int, cut: torch.Tensor, final: torch.Tensor) -> None:
        self._final_obs.append(final)  # the learner values them
        self._final_index += [(t, int(b)) for b in cut]


def make_worker(cfg: Config, rank: int, store: ParameterStore, device: torch.device | str = "cpu") -> Worker:
    """The worker `cfg.mode` needs: one that pushes gradients (grad, sync) or experience (data, central)."""
    cls = ExperienceWorker if cfg.mode in ("data", "central") else Worker
    return cls(cfg, rank, store, device)
