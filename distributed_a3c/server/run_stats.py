"""The run's statistics under the metric names of docs/METRICS.md, and the policy that says when training stops.

Both belong to the lead parameter server (shard 0), which feeds them every valid push; the other shards
only apply gradients. Thread-safe: pushes arrive on several RPC threads while the run loop reads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from distributed_a3c.config import TrainConfig
from distributed_a3c.messages import ExperiencePush, GradientPush

RETURN_WINDOW = 100


class RunStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempt_start = time.monotonic()
        self.start_time = self.attempt_start
        """When training began, moved back by the training time of the checkpoint resumed from: elapsed time
        and `train.max_minutes` count the whole run across restarts, not each attempt."""
        self.env_steps = 0
        self.episodes = 0
        self.returns: deque[float] = deque(maxlen=RETURN_WINDOW)
        self.lengths: deque[int] = deque(maxlen=RETURN_WINDOW)
        self.pushes_by_rank: Counter[int] = Counter()
        self.last_stats: dict[int, dict[str, float]] = {}
        """The stats of each rank's latest push (e.g. its peak RSS so far)."""
        self.staleness_counts: Counter[int] = Counter()
        """How many valid pushes arrived at each staleness, over the whole run (exact, one entry per value)."""
        self.policy_lag_sum, self.policy_lag_count, self.policy_lag_max = 0.0, 0, 0.0
        self.evaluations: list[tuple[int, float]] = []
        """(env step of the evaluated weights, mean return) of every evaluation so far (eval.*)."""
        self.eval_seconds = 0.0
        self._interval = _IntervalStats()

    def record_push(self, req: GradientPush | ExperiencePush, staleness: int, dropped: bool) -> None:
        """A valid push: its env steps, finished episodes, worker statistics and staleness count (also
        when it was too stale to apply: the experience happened)."""
        with self._lock:
            self.env_steps += req.env_steps
            self.episodes += len(req.episode_returns)
            self.returns.extend(req.episode_returns)
            self.lengths.extend(req.episode_lengths)
            self.pushes_by_rank[req.rank] += 1
            self.last_stats[req.rank] = req.stats
            self._interval.add(req.stats)
            self._interval.staleness.append(staleness)
            self.staleness_counts[staleness] += 1
            self._interval.dropped += int(dropped)

    def record_learner(self, stats: dict[str, float], rollouts: int, policy_lags: list[float]) -> None:
        """mode=data, central: one learner step over `rollouts` rollouts, each `policy_lags` versions behind
        the weights it updated (GA3C's policy lag: the learner's version minus the version that acted)."""
        with self._lock:
            self._interval.add_learner(stats, rollouts, policy_lags)
            self.policy_lag_sum += sum(policy_lags)
            self.policy_lag_count += len(policy_lags)
            self.policy_lag_max = max(self.policy_lag_max, *policy_lags)

    def record_eval(self, global_step: int, mean_return: float, seconds: float) -> None:
        """An evaluation of the weights reached at `global_step` (its evaluations arrive in that order)."""
        with self._lock:
            self.evaluations.append((global_step, mean_return))
            self.eval_seconds += seconds

    def eval_mean_return(self) -> float:
        """Mean return of the latest evaluation; -inf before the first."""
        with self._lock:
            return self.evaluations[-1][1] if self.evaluations else float("-inf")

    def eval_summary(self, target: float | None) -> dict[str, float]:
        """How many evaluations ran, the last and best means, the first env step whose weights reached
        `target`, and their cost (empty without evaluations)."""
        with self._lock:
            history, seconds = list(self.evaluations), self.eval_seconds
        if not history:
            return {}
        reached = [step for step, mean in history if target is not None and mean >= target]
        return {
            "evaluations": len(history),
            "last_mean_return": history[-1][1],
            "last_global_step": history[-1][0],
            "best_mean_return": max(mean for _, mean in history),
            "first_global_step_at_target": reached[0] if reached else None,
            "seconds": round(seconds, 3),
        }

    def record_step(self, lr: float, batch_env_steps: int) -> None:
        """An optimizer step: its learning rate and the env steps its gradient learned from."""
        with self._lock:
            self._interval.steps_lr.append(lr)
            self._interval.steps_batch.append(batch_env_steps)

    def record_rejected(self) -> None:
        with self._lock:
            self._interval.rejected += 1

    def elapsed_s(self) -> float:
        """Seconds of training, over every attempt of this run."""
        return time.monotonic() - self.start_time

    def attempt_s(self) -> float:
        """Seconds since this attempt started (the server's busy time is counted per attempt)."""
        return time.monotonic() - self.attempt_start

    def mean_return(self) -> float:
        """Mean of the last 100 episode returns; -inf until 100 episodes have finished."""
        with self._lock:
            if len(self.returns) < RETURN_WINDOW:
                return float("-inf")
            return sum(self.returns) / len(self.returns)

    def staleness_summary(self) -> dict[str, float]:
        """Mean, p50, p99 and max staleness of every valid push so far (exact, from the counts)."""
        with self._lock:
            counts = sorted(self.staleness_counts.items())
        total = sum(n for _, n in counts)
        if not total:
            return {}
        out = {"mean": sum(s * n for s, n in counts) / total, "max": counts[-1][0], "pushes": total}
        for name, q in (("p50", 0.50), ("p99", 0.99)):
            seen = 0
            for s, n in counts:  # nearest-rank quantile: the smallest value with >= q of the pushes at or below it
                seen += n
                if seen >= q * total:
                    out[name] = s
                    break
        return out

    def policy_lag_summary(self) -> dict[str, float]:
        """mode=data, central: mean and max policy lag of every rollout learned from so far."""
        with self._lock:
            if not self.policy_lag_count:
                return {}
            return {"mean": self.policy_lag_sum / self.policy_lag_count, "max": self.policy_lag_max}

    def snapshot(self, server_counters: dict[str, float]) -> dict[str, float]:
        """Metrics since the previous snapshot; `server_counters` are the lead's (ParameterServer.counters)."""
        with self._lock:
            now = time.monotonic()
            row = self._interval.drain(now, self.env_steps)
            rets, lens = list(self.returns), list(self.lengths)
            attempt = max(now - self.attempt_start, 1e-9)
            row.update(
                {
                    "global_step": self.env_steps,
                    "charts/episodes": self.episodes,
                    "server/version": server_counters["version"],
                    "server/pushes": sum(self.pushes_by_rank.values()),
                    "server/dropped_pushes": server_counters["dropped"],
                    "server/rejected_pushes": server_counters["rejected"],
                    "server/busy_fraction": server_counters["busy_s"] / attempt,
                    "time/wall_s": now - self.start_time,
                    "time/attempt_s": attempt,
                }
            )
        if rets:
            row["charts/mean_return_100"] = sum(rets) / len(rets)
            row["charts/min_return_100"] = min(rets)
            row["charts/max_return_100"] = max(rets)
        if lens:
            row["charts/mean_length_100"] = sum(lens) / len(lens)
        return row

    def state_dict(self) -> dict:
        with self._lock:
            return {
                "env_steps": self.env_steps,
                "episodes": self.episodes,
                "returns": list(self.returns),
                "lengths": list(self.lengths),
                "train_time_s": time.monotonic() - self.start_time,
                "evaluations": [list(e) for e in self.evaluations],
                "pushes_by_rank": {str(rank): n for rank, n in self.pushes_by_rank.items()},
            }

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self.env_steps = int(state["env_steps"])
            self.episodes = int(state["episodes"])
            self.returns.clear()
            self.returns.extend(state["returns"])
            self.lengths.clear()
            self.lengths.extend(state.get("lengths", []))
            self.start_time = self.attempt_start - float(state.get("train_time_s", 0.0))
            self.evaluations = [(int(step), float(mean)) for step, mean in state.get("evaluations", [])]
            self.pushes_by_rank = Counter({int(rank): int(n) for rank, n in state.get("pushes_by_rank", {}).items()})
            # The next interval's rates count from here, not from zero.
            self._interval.t0, self._interval.steps0 = time.monotonic(), self.env_steps


class StopPolicy:
    """When training is over: `train.total_env_steps`, `train.target_return` (on the mean of the last 100
    training episodes, or of the latest evaluation: `train.target_source`), `train.max_minutes`; None while
    it goes on."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def reason(self, stats: RunStats) -> str | None:
        c = self.cfg
        if stats.env_steps >= c.total_env_steps:
            return "total_env_steps"
        mean = stats.eval_mean_return() if c.target_source == "eval" else stats.mean_return()
        if c.target_return is not None and mean >= c.target_return:
            return "target_return"
        if c.max_minutes is not None and stats.elapsed_s() >= 60 * c.max_minutes:
            return "max_minutes"
        return None


class _IntervalStats:
    """Sums over the pushes of one log interval."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.steps0 = 0
        self.reset()

    def reset(self) -> None:
        self.sums: Counter[str] = Counter()
        self.count = 0
        self.staleness: list[int] = []
        self.dropped = 0
        self.rejected = 0
        self.learner_sums: Counter[str] = Counter()
        self.learner_steps = 0
        self.learner_rollouts = 0
        self.policy_lags: list[float] = []
        self.steps_lr: list[float] = []
        self.steps_batch: list[int] = []

    def add_learner(self, stats: dict[str, float], rollouts: int, policy_lags: list[float]) -> None:
        self.learner_steps += 1
        self.learner_rollouts += rollouts
        self.policy_lags += policy_lags
        for k, v in stats.items():
            self.learner_sums[k] += float(v)

    def add(self, stats: dict[str, float]) -> None:
        self.count += 1
        for k, v in stats.items():
            self.sums[k] += float(v)

    def drain(self, now: float, env_steps: int) -> dict[str, float]:
        dt = max(now - self.t0, 1e-9)
        row: dict[str, float] = {
            "charts/SPS": (env_steps - self.steps0) / dt,
            "server/pushes_per_s": self.count / dt,
            "server/dropped_in_interval": self.dropped,
        }
        if self.count:
            row.update({k: v / self.count for k, v in self.sums.items()})
        if self.learner_steps:  # the losses are the learner's, not the workers'
            row.update({k: v / self.learner_steps for k, v in self.learner_sums.items()})
            row["server/rollouts_per_step"] = self.learner_rollouts / self.learner_steps
            row["server/policy_lag_mean"] = sum(self.policy_lags) / len(self.policy_lags)
            row["server/policy_lag_max"] = max(self.policy_lags)
        if self.steps_lr:
            row["server/lr"] = sum(self.steps_lr) / len(self.steps_lr)
            row["server/batch_env_steps"] = sum(self.steps_batch) / len(self.steps_batch)
            row["server/steps_per_s"] = len(self.steps_lr) / dt
        if self.staleness:
            row["server/staleness_mean"] = sum(self.staleness) / len(self.staleness)
            row["server/staleness_max"] = max(self.staleness)
        self.t0, self.steps0 = now, env_steps
        self.reset()
        return row
