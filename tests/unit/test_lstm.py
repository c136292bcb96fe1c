"""model=lstm: the recurrent state is reset where episodes start and carried otherwise, the gradient runs
through the whole rollout, and a Worker trains it against an in-process ParameterServer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import distributed_a3c.worker.gradient as worker_module
from distributed_a3c.config import Config, OptimConfig, ServerConfig, TrainConfig, validate
from distributed_a3c.models import LSTMActorCritic, build_model, build_policy
from distributed_a3c.server import ParameterServer
from distributed_a3c.worker import Worker

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
T, B, H = 6, 4, 8


def _model(action_space: gym.Space | None = None, seed: int = 0) -> LSTMActorCritic:
    torch.manual_seed(seed)
    return LSTMActorCritic(OBS, action_space or gym.spaces.Discrete(2), [5], "tanh", True, lstm_size=H)


def _inputs(seed: int = 1) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, B, 3, generator=g)
    state = (torch.randn(B, H, generator=g), torch.randn(B, H, generator=g))
    starts = torch.zeros(T, B, dtype=torch.bool)
    starts[0, 1] = starts[3, 2] = starts[4, 2] = True  # env 1 starts at t=0, env 2 twice
    return obs, state, starts


def _manual_rollout(model: LSTMActorCritic, obs, state, starts) -> torch.Tensor:
    """The same computation one env and one step at a time, with a fresh zero state at every start."""
    values = torch.empty(T, B)
    for b in range(B):
        h, c = state[0][b : b + 1], state[1][b : b + 1]
        for t in range(T):
            if starts[t, b]:
                h, c = torch.zeros(1, H), torch.zeros(1, H)
            h, c = model.lstm(model.encoder(obs[t, b : b + 1]), (h, c))
            values[t, b] = model.value_head(h)[0, 0]
    return values


def test_sequence_matches_a_manually_stepped_lstm_cell():
    model = _model()
    obs, state, starts = _inputs()
    with torch.no_grad():
        _, values, _ = model.forward_sequence(obs, state, starts)
        torch.testing.assert_close(values, _manual_rollout(model, obs, state, starts))


def test_step_by_step_equals_the_whole_sequence_and_the_state_is_carried():
    model = _model()
    obs, state, starts = _inputs()
    with torch.no_grad():
        logits, values, final = model.forward_sequence(obs, state, starts)
        s = state
        for t in range(T):
            step_logits, step_values, s = model.step(obs[t], s, starts[t])
            torch.testing.assert_close(step_logits, logits[t])
            torch.testing.assert_close(step_values, values[t])
        torch.testing.assert_close(s[0], final[0])
        # Two halves, the second starting from the state the first ended in, equal the whole rollout.
        _, v1, mid = model.forward_sequence(obs[:3], state, starts[:3])
        _, v2, _ = model.forward_sequence(obs[3:], mid, starts[3:])
        torch.testing.assert_close(torch.cat([v1, v2]), values)


def test_state_is_reset_at_episode_starts_only():
    model = _model()
    obs, state, starts = _inputs()
    other = (state[0] + 5.0, state[1] - 3.0)
    with torch.no_grad():
        _, v, _ = model.forward_sequence(obs, state, starts)
        _, w, _ = model.forward_sequence(obs, other, starts)
    same = (v - w).abs() < 1e-6
    assert same[:, 1].all(), "env 1 starts at t=0: its initial state must not matter"
    assert same[3:, 2].all() and not same[:3, 2].any(), "env 2 forgets its state from its start at t=3 on"
    assert not same[:, 0].any() and not same[:, 3].any(), "envs without a start carry their state throughout"


def test_gradient_flows_through_the_whole_rollout_and_stops_at_episode_starts():
    model = _model()
    obs, state, starts = _inputs()
    obs.requires_grad_(True)
    h0 = state[0].clone().requires_grad_(True)
    _, values, _ = model.forward_sequence(obs, (h0, state[1]), starts)
    values[T - 1].sum().backward()  # a loss at the last step only
    reach = obs.grad.abs().sum(-1) > 0  # [T, B]: which observations the last step's loss depends on
    assert reach[:, 0].all() and reach[:, 3].all(), "truncated BPTT reaches back to the rollout's first step"
    assert reach[:, 1].all()
    assert reach[4:, 2].all() and not reach[:4, 2].any(), "nothing flows back across an episode start"
    assert h0.grad[0].abs().sum() > 0 and h0.grad[2].abs().sum() == 0


def test_build_policy_and_gaussian_head():
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    model = build_policy("lstm", OBS, box, hidden_sizes=[5], activation="tanh", shared_torso=True, lstm_size=H)
    assert model.is_recurrent and model.continuous and model.log_std.shape == (2,)
    obs, state, starts = _inputs()
    mean, _, _ = model.forward_sequence(obs, state, starts)
    assert mean.shape == (T, B, 2)
    assert model.sample(mean[0]).shape == (B, 2)
    with pytest.raises(ValueError, match="shared_torso"):
        LSTMActorCritic(OBS, box, [5], shared_torso=False)


def test_feedforward_models_are_not_recurrent():
    mlp = build_policy("mlp", OBS, gym.spaces.Discrete(2), hidden_sizes=[5])
    assert not getattr(mlp, "is_recurrent", False)


# ----- the worker -----------------------------------------------------------------------------------------


def _cfg(env_id: str = "CartPole-v1", envs: int = 4, rollout: int = 8, **kw) -> Config:
    cfg = Config()
    cfg.env.id = env_id
    cfg.env.vectorization = "sync"  # SAME_STEP autoreset: a start follows each episode end at once
    cfg.model.name = "lstm"
    cfg.model.shared_torso = True
    cfg.model.hidden_sizes = [32]
    cfg.model.lstm_size = 16
    cfg.worker.envs_per_worker = envs
    cfg.worker.rollout_len = rollout
    cfg.train = TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None)
    for key, value in kw.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return validate(cfg)


def _server(cfg: Config) -> ParameterServer:
    env = gym.make(cfg.env.id, **cfg.env.kwargs)
    model = build_model(cfg, env.observation_space, env.action_space)
    env.close()
    return ParameterServer(model, OptimConfig(lr=1e-3), ServerConfig(), cfg.train)


def test_worker_replays_the_rollout_exactly_and_carries_the_state_across_rollouts():
    cfg = _cfg(envs=3, rollout=10, env__max_episode_steps=7)  # episodes end inside rollouts
    worker = Worker(cfg, 1, _server(cfg))
    worker._apply(worker.store.pull())
    assert worker.starts.all(), "the first observations begin episodes"
    first = worker.collect()
    ended = (first.terminated | first.truncated).bool()
    assert ended.any()
    torch.testing.assert_close(first.starts[1:], ended[:-1])  # a start follows every episode end
    assert first.starts[0].all()
    with torch.no_grad():  # the gradient pass sees exactly what acting saw
        _, values, final = worker.model.forward_sequence(first.obs, first.initial_state, first.starts)
    torch.testing.assert_close(values, first.values)
    torch.testing.assert_close(final[0], worker.state[0])
    second = worker.collect()
    torch.testing.assert_close(second.initial_state[0], final[0])  # carried, not reset, across rollouts
    torch.testing.assert_close(second.starts[0], ended[-1])
    worker.envs.close()


def test_truncation_bootstrap_reads_the_final_obs_with_the_pre_reset_state(monkeypatch):
    seen, original = [], worker_module.final_observations

    def recording(info, env_indices):
        seen.append(original(info, env_indices))
        return seen[-1]

    monkeypatch.setattr(worker_module, "final_observations", recording)
    cfg = _cfg(envs=2, rollout=6, env__max_episode_steps=4)
    worker = Worker(cfg, 1, _server(cfg))
    rollout = worker.collect()
    t = 3  # both envs are cut by the time limit at their 4th step
    assert rollout.truncated[t].all() and not rollout.terminated[t].any() and len(seen) == 1
    with torch.no_grad():
        _, _, state = worker.model.forward_sequence(
            rollout.obs[: t + 1], rollout.initial_state, rollout.starts[: t + 1]
        )
        final_obs = torch.from_numpy(np.asarray(seen[0]))
        _, expected, _ = worker.model.step(final_obs, state, torch.zeros(2, dtype=torch.bool))
        _, reset_value, _ = worker.model.step(final_obs, worker.model.initial_state(2), torch.ones(2, dtype=torch.bool))
    torch.testing.assert_close(rollout.final_values[t], expected)
    assert not torch.allclose(expected, reset_value)
    worker.envs.close()


def test_next_step_autoreset_envs_start_the_state_after_the_reset_step():
    """env.vectorization=vector (NEXT_STEP): the row after an episode end holds the real final observation,
    read with the carried state; the masked reset step follows, and only the row after it starts afresh."""
    cfg = _cfg(envs=2, rollout=8, env__max_episode_steps=3)
    cfg.env.vectorization = "vector"  # built directly: validation may still refuse this pairing
    worker = Worker(cfg, 1, _server(cfg))
    assert worker.next_step_autoreset
    rollout = worker.collect()
    # Episodes of 3 steps: steps 0-2 act, step 3 only resets (masked), row 4 is the new first observation.
    assert rollout.truncated[2].all() and not rollout.valid[3].any() and rollout.valid[4].all()
    expected = torch.zeros(8, 2, dtype=torch.bool)
    expected[0] = expected[4] = True
    torch.testing.assert_close(rollout.starts, expected)
    with torch.no_grad():
        _, values, _ = worker.model.forward_sequence(rollout.obs, rollout.initial_state, rollout.starts)
    torch.testing.assert_close(values, rollout.values)
    torch.testing.assert_close(rollout.final_values[2], rollout.values[3])  # V(final obs), pre-reset state
    worker.envs.close()


@pytest.mark.parametrize(
    ("env_id", "extra"),
    [("CartPole-v1", {}), ("Pendulum-v1", {"env__normalize_obs": True, "worker__overlap": True})],
)
def test_a_few_real_updates_through_the_worker(env_id, extra):
    cfg = _cfg(env_id, envs=4, rollout=5, **extra)
    server = _server(cfg)
    before = server.flat.weights.clone()
    worker = Worker(cfg, 1, server)
    cfg.train.total_env_steps = 6 * 4 * 5
    pushes = worker.run()  # pull, then rollout -> BPTT gradient -> push until the server says stop
    assert pushes >= 5 and server.version >= 5 and server.rejected == 0
    assert not torch.equal(before, server.flat.weights)
    assert torch.isfinite(server.flat.weights).all()
    assert server.stats.last_stats[1]["losses/grad_norm"] > 0
