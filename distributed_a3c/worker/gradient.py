"""A worker: pull weights -> collect an n-step rollout -> compute the A2C gradient -> push it.

The worker talks to a `ParameterStore`; it never sees RPC. Tests hand it the in-process server, a
distributed run a remote store. mode=data and mode=central push experience instead (experience.py).
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import torch

from distributed_a3c.config import Config
from distributed_a3c.envs import (
    final_observations,
    finished_episodes,
    is_next_step_autoreset,
    make_vector_env,
)
from distributed_a3c.messages import WIRE_DTYPES, ExperiencePush, GradientPush, ParameterStore, WeightsReply
from distributed_a3c.models import action_to_env, build_model
from distributed_a3c.rl.a2c import A2CHyperparameters, Rollout, a2c_step
from distributed_a3c.rl.grads import clip_grad_norm_, flatten_parameters_
from distributed_a3c.rl.normalize import RewardScaler, RunningMeanStd


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def worker_seed(base_seed: int, rank: int) -> int:
    """Seed of env 0 of this rank; env i gets this + i."""
    return base_seed + 1000 * rank


class Worker:
    def __init__(self, cfg: Config, rank: int, store: ParameterStore, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.rank = rank
        self.store = store
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed + rank)
        n = cfg.worker.envs_per_worker
        self.envs = make_vector_env(cfg.env, n, worker_seed(cfg.seed, rank))
        self.action_space = self.envs.single_action_space
        self.model = self._build_model()
        self.flat = None if self.model is None else flatten_parameters_(self.model.to(self.device))
        self.recurrent = self.model is not None and self.model.is_recurrent
        a = cfg.algo
        self.hyperparameters = A2CHyperparameters(
            a.gamma, a.gae_lambda, a.value_coef, a.entropy_coef, a.normalize_advantages
        )
        # Normalize with the server's statistics (from each reply); send the moments of what this worker saw.
        obs_shape = self.envs.single_observation_space.shape
        self.obs_stats = RunningMeanStd.zeros(obs_shape) if cfg.env.normalize_obs else None
        self._seen_obs_stats: RunningMeanStd | None = None
        self.reward_scaler = RewardScaler(n, cfg.algo.gamma) if cfg.env.scale_rewards else None
        # NEXT_STEP vector envs (env.vectorization=vector) reset an env on the step after its episode ended,
        # ignoring the action: that step is masked out of the loss, and the episode's final observation is
        # simply the next row of the rollout.
        self.next_step_autoreset = is_next_step_autoreset(self.envs)
        self._after_done = np.zeros(n, dtype=bool)
        seed = worker_seed(cfg.seed, rank)
        obs, _ = self.envs.reset(seed=seed if self.next_step_autoreset else [seed + i for i in range(n)])
        self._raw_obs = obs
        self.obs = self._observe(obs)
        if self.recurrent:
            self.state = self.model.initial_state(n, self.device)
            self.starts = torch.ones(n, dtype=torch.bool, device=self.device)
        self.version = -1
        self.shard_versions: list[int] | None = None
        self.pushes = 0
        self._returns: list[float] = []
        self._lengths: list[int] = []
        self._time = {"env": 0.0, "act": 0.0, "learn": 0.0, "wait": 0.0}
        self._rss_mb, self._rss_at = 0.0, float("-inf")
        self._alloc_rollout()

    # ----- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Train until the server says stop; return the number of pushes made."""
        try:
            reply = self.begin()
            if self.cfg.worker.overlap:
                self._run_overlapped(reply)
            else:
                while not reply.stop:
                    reply = self.step()
        finally:
            self.envs.close()
        return self.pushes

    def begin(self) -> WeightsReply:
        """Pull the current weights (and observation statistics) to act with; the reply may say stop."""
        reply = self.store.pull(self.rank)
        self._apply(reply)
        return reply

    def _run_overlapped(self, reply: WeightsReply) -> None:
        """Collect the next rollout while the previous push is in flight (one version of extra staleness).

        The gradient of each rollout is computed with the weights that acted in it, and the fresh weights
        from the reply are loaded only afterwards, so every gradient stays on-policy for its rollout.
        """
        pending = None
        while not reply.stop:
            request = self.prepare()
            # The next rollout reuses these buffers while this push may still be on its way.
            if isinstance(request, GradientPush):
                request.grads = request.grads.clone()
            else:
                request.experience = request.experience.clone()
            if pending is not None:
                t0 = time.perf_counter()
                reply = pending.wait()
                self._time["wait"] += time.perf_counter() - t0
                self._apply(reply)
                if reply.stop:
                    break
            pending = self.store.push_async(request)
            self.pushes += 1

    def step(self) -> WeightsReply:
        """One rollout, one gradient, one push."""
        request = self.prepare()
        t0 = time.perf_counter()
        reply = self.store.push(request)
        self._time["wait"] += time.perf_counter() - t0
        return self.finish(reply)

    def prepare(self) -> GradientPush | ExperiencePush:
        """Collect a rollout and compute its gradient: the push to send."""
        return self._request(self.compute_gradients(self.collect()))

    def finish(self, reply: WeightsReply) -> WeightsReply:
        """Take the server's answer to a push: fresh weights, statistics, stop."""
        self._apply(reply)
        self.pushes += 1
        return reply

    def _apply(self, reply: WeightsReply) -> None:
        if reply.weights is not None and self.flat is not None:
            self.flat.load_(reply.weights)
        if reply.obs_stats is not None and self.obs_stats is not None:
            self.obs_stats = reply.obs_stats
        self.version = reply.version
        self.shard_versions = reply.shard_versions

    def _request(self, stats: dict[str, float]) -> GradientPush:
        grads = self.flat.grads
        if self.cfg.server.wire_dtype != "float32":
            grads = grads.to(WIRE_DTYPES[self.cfg.server.wire_dtype])
        return GradientPush(
            rank=self.rank,
            version=self.version,
            grads=grads,
            env_steps=self.cfg.worker.push_env_steps,
            stats=stats,
            shard_versions=self.shard_versions,
            **self._take_reports(),
        )

    def _take_reports(self) -> dict:
        """What this worker saw since its last push (finished episodes, observation moments), handed over."""
        reports = {
            "episode_returns": self._returns,
            "episode_lengths": self._lengths,
            "obs_stats": self._seen_obs_stats,
        }
        self._returns, self._lengths, self._seen_obs_stats = [], [], None
        return reports

    # ----- rollout -----------------------------------------------------------------------------------
    def _alloc_rollout(self) -> None:
        T, B = self.cfg.worker.rollout_len, self.cfg.worker.envs_per_worker
        dev = self.device
        self._obs = torch.empty((T, *self.obs.shape), dtype=self.obs.dtype, device=dev)
        act_shape = self.action_space.shape or ()
        act_dtype = torch.float32 if act_shape else torch.long
        self._actions = torch.empty((T, B, *act_shape), dtype=act_dtype, device=dev)
        self._values = torch.empty((T, B), device=dev)
        self._final_values = torch.zeros((T, B), device=dev)
        # Per-step env outputs stay in numpy and reach the device once per rollout.
        self._rewards = np.empty((T, B), dtype=np.float32)
        self._terminated = np.empty((T, B), dtype=bool)
        self._truncated = np.empty((T, B), dtype=bool)
        self._valid = np.ones((T, B), dtype=bool)
        if self.recurrent:
            self._starts = torch.empty((T, B), dtype=torch.bool, device=dev)
        if self.obs_stats is not None:
            self._raw_obs_buf = np.empty((T, *self._raw_obs.shape), dtype=np.float64)

    def _observe(self, obs: np.ndarray) -> torch.Tensor:
        """Raw env observations -> the model's input on the device (normalized with the server's statistics)."""
        if self.obs_stats is not None:
            obs = self.obs_stats.normalize(obs)
        return self._to_device(obs)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array)).to(self.device, non_blocking=True)

    @torch.inference_mode()
    def collect(self) -> Rollout:
        T = self.cfg.worker.rollout_len
        recurrent, obs_stats, scaler = self.recurrent, self.obs_stats, self.reward_scaler
        self._final_values.zero_()
        t_env = 0.0
        t0 = time.perf_counter()
        if obs_stats is not None:
            self.obs = self._observe(self._raw_obs)  # with the statistics of the latest reply
        initial_state = self.state if recurrent else None
        for t in range(T):
            self._obs[t] = self.obs
            actions = self._act(t)
            self._actions[t] = actions
            te = time.perf_counter()
            obs, rewards, terminated, truncated, info = self.envs.step(action_to_env(actions, self.action_space))
            t_env += time.perf_counter() - te
            if self.next_step_autoreset:
                self._valid[t] = ~self._after_done
                self._after_done = terminated | truncated
            if scaler is not None:
                rewards = scaler(rewards, terminated | truncated)
            self._rewards[t] = rewards
            self._terminated[t] = terminated
            self._truncated[t] = truncated
            if info:
                self._record_episode_ends(t, terminated, truncated, info)
            if obs_stats is not None:
                self._raw_obs_buf[t] = self._raw_obs
                self._raw_obs = obs
            self.obs = self._observe(obs) if obs_stats is not None else self._to_device(obs)
            if recurrent:  # which envs begin an episode with the observation just returned
                begun = ~self._valid[t] if self.next_step_autoreset else terminated | truncated
                self.starts = self._to_device(begun)
        bootstrap = self._bootstrap_value()
        if obs_stats is not None:
            seen = RunningMeanStd.of(self._raw_obs_buf.reshape(-1, *self._raw_obs_buf.shape[2:]))
            self._seen_obs_stats = seen if self._seen_obs_stats is None else self._seen_obs_stats.merge_(seen)
        valid = None
        if self.next_step_autoreset:  # V(final obs) of an episode that ended at t is the value of row t + 1
            self._final_values = torch.cat([self._values[1:], bootstrap.unsqueeze(0)])
            valid = self._to_device(self._valid)
        self._time["env"] += t_env
        self._time["act"] += time.perf_counter() - t0 - t_env
        return Rollout(
            self._obs,
            self._actions,
            self._to_device(self._rewards),
            self._values,
            self._to_device(self._terminated),
            self._to_device(self._truncated),
            self._final_values,
            bootstrap,
            self._starts if recurrent else None,
            initial_state,
            valid,
        )

    # Hooks that experience.py overrides: how a step is acted and what is kept to value it.
    def _build_model(self) -> torch.nn.Module | None:
        return build_model(self.cfg, self.envs.single_observation_space, self.action_space)

    def _act(self, t: int) -> torch.Tensor:
        """Sample this step's actions (and record the values of its observations)."""
        if self.recurrent:
            self._starts[t] = self.starts
            dist_inputs, values, self.state = self.model.step(self.obs, self.state, self.starts)
        else:
            dist_inputs, values = self.model(self.obs)
        self._values[t] = values
        actions = self.model.sample(dist_inputs)
        self._record_actions(dist_inputs, actions)
        return actions

    def _record_actions(self, dist_inputs: torch.Tensor, actions: torch.Tensor) -> None:
        """Keep what the push needs of the policy that chose `actions` (nothing for a gradient push)."""

    def _bootstrap_value(self) -> torch.Tensor:
        if self.recurrent:
            return self.model.step(self.obs, self.state, self.starts)[1]
        return self.model.value(self.obs)

    def _record_time_limit_cuts(self, t: int, cut: torch.Tensor, final: torch.Tensor) -> None:
        """Envs `cut` reached a time limit at step t: value their real final observations `final`."""
        if self.recurrent:  # the state after step t is the one that would have read the final obs
            state = tuple(s[cut] for s in self.state)
            no_start = torch.zeros(cut.numel(), dtype=torch.bool, device=self.device)
            self._final_values[t, cut] = self.model.step(final, state, no_start)[1]
        else:
            self._final_values[t, cut] = self.model.value(final)

    def _record_episode_ends(self, t: int, terminated: np.ndarray, truncated: np.ndarray, info: dict) -> None:
        cut = np.flatnonzero(truncated & ~terminated)
        if cut.size and not self.next_step_autoreset:
            final = self._observe(final_observations(info, cut))
            self._record_time_limit_cuts(t, torch.from_numpy(cut).to(self.device), final)
        rets, lens = finished_episodes(info)
        self._returns += rets
        self._lengths += lens

    def _peak_rss_mb(self) -> float:
        # Read at most once a second: right after a backward pass getrusage cost ~0.3 ms here, a tenth of
        # a CartPole update.
        now = time.monotonic()
        if now - self._rss_at >= 1.0:
            self._rss_mb, self._rss_at = peak_rss_mb(), now
        return self._rss_mb

    # ----- gradient ----------------------------------------------------------------------------------
    def compute_gradients(self, r: Rollout) -> dict[str, float]:
        """Write the A2C gradient of rollout `r` into `self.flat.grads`; return the loss statistics."""
        t0 = time.perf_counter()
        loss, stats = a2c_step(self.model, r, self.hyperparameters)
        self.flat.zero_grad_()
        loss.backward()
        stats["losses/grad_norm"] = clip_grad_norm_(self.flat.grads, self.cfg.algo.max_grad_norm)
        self._time["learn"] += time.perf_counter() - t0
        return {**stats, **self._time_stats()}

    def _time_stats(self) -> dict[str, float]:
        """Where this worker's time went since the last push, and its memory."""
        stats = {f"worker/{k}_s": v for k, v in self._time.items()}
        stats["worker/max_rss_mb"] = self._peak_rss_mb()
        self._time = dict.fromkeys(self._time, 0.0)
        return stats
