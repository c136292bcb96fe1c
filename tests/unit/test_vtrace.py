"""V-trace (Espeholt et al. 2018, IMPALA, eq. 1 and sec. 4.2) against a slow reference written from the paper:

    v_s = V(x_s) + sum_{t >= s} gamma^(t-s) (prod_{i=s}^{t-1} c_i) delta_t
    delta_t = rho_t (r_t + gamma V(x_{t+1}) - V(x_t))
    A_s = rho_s (r_s + gamma v_{s+1} - V(x_s))

with rho_t = min(1, pi/mu), c_t = min(1, pi/mu), the sums stopping at the end of an episode (V(x_{t+1}) is 0
after a terminal step and V(real final obs) after a time limit, where v_{s+1} is that value too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_a3c.config import Config
from distributed_a3c.envs import make_vector_env
from distributed_a3c.models import build_model
from distributed_a3c.rl.a2c import A2CHyperparameters, Rollout, a2c_step
from distributed_a3c.rl.experience import Experience
from distributed_a3c.rl.returns import advantages_and_returns, vtrace
from distributed_a3c.server.validation import ExperienceSpec, experience_error

T, B = 7, 5


def _rollout(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ends = torch.rand(T, B, generator=g)
    return {
        "rewards": torch.randn(T, B, generator=g, dtype=torch.float64),
        "values": torch.randn(T, B, generator=g, dtype=torch.float64),
        "bootstrap_value": torch.randn(B, generator=g, dtype=torch.float64),
        "terminated": ends < 0.15,
        "truncated": (ends >= 0.15) & (ends < 0.3),
        "final_values": torch.randn(T, B, generator=g, dtype=torch.float64) + 3.0,
    }


def _reference(r: dict[str, torch.Tensor], log_rhos: torch.Tensor, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    rew, v, boot = r["rewards"].numpy(), r["values"].numpy(), r["bootstrap_value"].numpy()
    term, trunc, final = r["terminated"].numpy(), r["truncated"].numpy(), r["final_values"].numpy()
    rho = np.minimum(1.0, np.exp(log_rhos.numpy()))

    def next_value(t: int, b: int) -> float:
        if term[t, b]:
            return 0.0
        if trunc[t, b]:
            return final[t, b]
        return v[t + 1, b] if t + 1 < T else boot[b]

    vs, adv = np.zeros((T, B)), np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total, weight = v[s, b], 1.0
            for t in range(s, T):
                total += gamma ** (t - s) * weight * rho[t, b] * (rew[t, b] + gamma * next_value(t, b) - v[t, b])
                if term[t, b] or trunc[t, b]:
                    break
                weight *= rho[t, b]  # c_t, clipped like rho_t at 1
            vs[s, b] = total
    for b in range(B):
        for s in range(T):
            ended = term[s, b] or trunc[s, b]
            nxt = next_value(s, b) if ended or s + 1 == T else vs[s + 1, b]
            adv[s, b] = rho[s, b] * (rew[s, b] + gamma * nxt - v[s, b])
    return adv, vs


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("gamma", [0.99, 0.9])
def test_vtrace_matches_the_papers_sums(seed: int, gamma: float) -> None:
    r = _rollout(seed)
    log_rhos = torch.randn(T, B, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    adv, vs = vtrace(*r.values(), log_rhos, gamma)
    ref_adv, ref_vs = _reference(r, log_rhos, gamma)
    np.testing.assert_allclose(vs.numpy(), ref_vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_policy_vtrace_is_the_n_step_a2c_target(seed: int) -> None:
    r = _rollout(seed)
    expected_adv, expected_returns = advantages_and_returns(*r.values(), 0.99, 1.0)
    for log_rhos in (torch.zeros(T, B, dtype=torch.float64), torch.full((T, B), 2.0, dtype=torch.float64)):
        adv, vs = vtrace(*r.values(), log_rhos, 0.99)  # ratios above 1 are clipped to 1: the same
        torch.testing.assert_close(vs, expected_returns)
        torch.testing.assert_close(adv, expected_adv)


def test_an_action_the_learner_no_longer_takes_weighs_less() -> None:
    r = _rollout(0)
    unlikely = torch.zeros(T, B, dtype=torch.float64)
    unlikely[3] = -3.0  # pi/mu = e^-3 at step 3
    adv, _ = vtrace(*r.values(), unlikely, 0.99)
    on_policy, _ = vtrace(*r.values(), torch.zeros(T, B, dtype=torch.float64), 0.99)
    torch.testing.assert_close(adv[3], on_policy[3] * np.exp(-3.0))  # the steps after it are on-policy
    torch.testing.assert_close(adv[4:], on_policy[4:])


def _model_and_rollout(cfg: Config) -> tuple[torch.nn.Module, Rollout]:
    torch.manual_seed(0)
    envs = make_vector_env(cfg.env, B, 0)
    model = build_model(cfg, envs.single_observation_space, envs.single_action_space)
    obs = torch.randn(T, B, 4)
    with torch.no_grad():
        dist_inputs, values = model(obs.reshape(T * B, 4))
    actions = torch.randint(0, 2, (T, B))
    log_probs = model.distribution(dist_inputs).log_prob(actions.reshape(-1)).reshape(T, B)
    r = _rollout(1)
    rollout = Rollout(
        obs,
        actions,
        r["rewards"].float(),
        values.reshape(T, B),
        r["terminated"],
        r["truncated"],
        r["final_values"].float(),
        r["bootstrap_value"].float(),
        behaviour_log_probs=log_probs,
    )
    return model, rollout


def test_the_a2c_step_uses_vtrace_only_when_asked_and_given_behaviour_log_probs() -> None:
    model, rollout = _model_and_rollout(Config())
    plain, _ = a2c_step(model, rollout, A2CHyperparameters())
    on_policy, _ = a2c_step(model, rollout, A2CHyperparameters(vtrace=True))  # mu is the learner's own policy
    torch.testing.assert_close(on_policy, plain)
    rollout.behaviour_log_probs = rollout.behaviour_log_probs + 1.0  # mu likelier than pi: every rho is e^-1
    lagged, _ = a2c_step(model, rollout, A2CHyperparameters(vtrace=True))
    ignored, _ = a2c_step(model, rollout, A2CHyperparameters(vtrace=False))
    torch.testing.assert_close(ignored, plain)
    assert not torch.allclose(lagged, plain)


def test_behaviour_log_probs_of_the_wrong_shape_are_rejected() -> None:
    spec = ExperienceSpec(
        rollout_len=T, envs=B, obs_shape=(4,), obs_dtype=torch.float32, action_shape=(), num_actions=2
    )
    e = Experience(
        obs=torch.zeros(T, B, 4),
        actions=torch.zeros(T, B, dtype=torch.int64),
        rewards=torch.zeros(T, B),
        terminated=torch.zeros(T, B, dtype=torch.bool),
        truncated=torch.zeros(T, B, dtype=torch.bool),
        next_obs=torch.zeros(B, 4),
        final_obs=torch.zeros(0, 4),
        final_index=torch.zeros(0, 2, dtype=torch.int64),
    )
    assert experience_error(e, spec) is None
    e.behaviour_log_probs = torch.zeros(T, B)
    assert experience_error(e, spec) is None
    e.behaviour_log_probs = torch.zeros(T - 1, B)
    assert "experience.behaviour_log_probs is" in experience_error(e, spec)
    e.behaviour_log_probs = torch.full((T, B), float("nan"))
    assert "non-finite" in experience_error(e, spec)
