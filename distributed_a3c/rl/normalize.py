"""Running mean / variance of observations and returns, mergeable across workers.

Each worker summarizes the raw observations of one rollout as (mean, var, count) and sends it with its
gradient; the server folds it into the master statistics with the parallel-variance merge of Chan,
Golub and LeVeque ("Updating formulae and a pairwise algorithm for computing sample variances", 1979),
and every worker normalizes with the server's statistics, so all workers see the same input scaling.
Rewards are scaled per worker as in the common VecNormalize: divided by the running std of the
discounted return. Plain numpy, float64: no torch, no processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OBS_CLIP = 10.0
"""Normalized observations are clipped to [-OBS_CLIP, OBS_CLIP] (VecNormalize's default)."""
REWARD_CLIP = 10.0
"""Scaled rewards are clipped to [-REWARD_CLIP, REWARD_CLIP]."""
EPS = 1e-8
"""Added to the variance before the square root."""


def merge_moments(
    mean_a: np.ndarray, var_a: np.ndarray, count_a: float, mean_b: np.ndarray, var_b: np.ndarray, count_b: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, population variance and count of the union of two samples, from each sample's moments.

    Chan et al.: with delta = mean_b - mean_a and n = n_a + n_b,
    mean = mean_a + delta * n_b / n and M2 = M2_a + M2_b + delta^2 * n_a * n_b / n, var = M2 / n.
    """
    count = count_a + count_b
    if count == 0:
        return np.array(mean_a, dtype=np.float64), np.array(var_a, dtype=np.float64), 0.0
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / count)
    m2 = var_a * count_a + var_b * count_b + np.square(delta) * (count_a * count_b / count)
    return mean, m2 / count, float(count)


@dataclass
class RunningMeanStd:
    """Mean, population variance and count of every sample seen so far (per feature)."""

    mean: np.ndarray
    var: np.ndarray
    count: float = 0.0

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> RunningMeanStd:
        """No samples yet: mean 0 and variance 1, so normalizing is the identity (up to clipping)."""
        return cls(np.zeros(shape, np.float64), np.ones(shape, np.float64), 0.0)

    @classmethod
    def of(cls, batch: np.ndarray) -> RunningMeanStd:
        """The moments of `batch` [N, *shape] (N samples along the first axis)."""
        batch = np.asarray(batch, dtype=np.float64)
        return cls(batch.mean(axis=0), batch.var(axis=0), float(batch.shape[0]))

    def merge_(self, other: RunningMeanStd) -> RunningMeanStd:
        """Fold `other`'s samples into these statistics in place; return self."""
        if other.count > 0:
            if self.count == 0:
                self.mean, self.var = other.mean.astype(np.float64), other.var.astype(np.float64)
                self.count = float(other.count)
            else:
                self.mean, self.var, self.count = merge_moments(
                    self.mean, self.var, self.count, other.mean, other.var, other.count
                )
        return self

    def update_(self, batch: np.ndarray) -> RunningMeanStd:
        """Fold the samples of `batch` [N, *shape] into these statistics in place; return self."""
        return self.merge_(RunningMeanStd.of(batch))

    def copy(self) -> RunningMeanStd:
        return RunningMeanStd(self.mean.copy(), self.var.copy(), self.count)

    def normalize(self, x: np.ndarray, clip: float = OBS_CLIP) -> np.ndarray:
        """(x - mean) / sqrt(var + eps), clipped to [-clip, clip], as float32."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / np.sqrt(self.var + EPS)
        return np.clip(z, -clip, clip).astype(np.float32)

    # Checkpoints load with weights_only=True: store plain lists and floats, not numpy arrays.
    def state_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    @classmethod
    def from_state_dict(cls, state: dict) -> RunningMeanStd:
        return cls(np.asarray(state["mean"], np.float64), np.asarray(state["var"], np.float64), float(state["count"]))


@dataclass
class RewardScaler:
    """Divides rewards by the running std of the discounted return, per env (VecNormalize's reward scaling).

    ret <- gamma * ret + r (reset to 0 where an episode ended); r / sqrt(Var[ret] + eps), clipped. The
    mean is not subtracted, so the sign of every reward is kept.
    """

    num_envs: int
    gamma: float
    clip: float = REWARD_CLIP
    returns: np.ndarray = field(init=False)
    stats: RunningMeanStd = field(init=False)

    def __post_init__(self) -> None:
        self.returns = np.zeros(self.num_envs, np.float64)
        self.stats = RunningMeanStd.zeros(())

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Scaled rewards of one vector step; `dones` marks the envs whose episode ended at this step."""
        self.returns = self.returns * self.gamma + rewards
        self.stats.update_(self.returns)
        scaled = rewards / np.sqrt(self.stats.var + EPS)
        self.returns[dones] = 0.0
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)
