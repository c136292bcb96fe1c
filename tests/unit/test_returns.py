"""n-step returns and GAE against deliberately slow numpy references written from the formulas.

Notation (Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE", eqs. 11-16):
    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = sum_{l >= 0} (gamma * lambda)^l * delta_{t+l}      (up to the end of the episode)
    target  = A_t + V(s_t)
where V(s_{t+1}) is 0 when the episode terminated at t, V(real final obs) when it was truncated at t,
and the bootstrap value after the last step of the rollout. With lambda = 1 the targets are the n-step
returns of the A3C paper (Mnih et al. 2016, algorithm S3); with lambda = 0 they are one-step TD targets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distributed_a3c.rl.returns import advantages_and_returns

T, B = 7, 4
SEEDS = [0, 1, 2]
GAMMA_LAMBDA = [(0.99, 1.0), (0.99, 0.95), (0.9, 0.0), (1.0, 1.0), (0.5, 0.7), (1.0, 0.0)]
CASES = ["no_end", "terminated_mid", "truncated_mid", "both_last", "mixed_last", "random"]


def _next_value(t, b, values, bootstrap_value, terminated, truncated, final_values):
    """V(s_{t+1}) as the next state of step t really is, never the first state of the next episode."""
    if terminated[t, b]:
        return 0.0
    if truncated[t, b]:
        return final_values[t, b]
    if t == values.shape[0] - 1:
        return bootstrap_value[b]
    return values[t + 1, b]


def reference_gae(rewards, values, bootstrap_value, terminated, truncated, final_values, gamma, lam):
    """Per env, per step, the explicit sum of discounted deltas (no backward recursion)."""
    n_steps, n_envs = rewards.shape
    advantages = np.zeros((n_steps, n_envs))
    for b in range(n_envs):
        delta = np.zeros(n_steps)
        for t in range(n_steps):
            v_next = _next_value(t, b, values, bootstrap_value, terminated, truncated, final_values)
            delta[t] = rewards[t, b] + gamma * v_next - values[t, b]
        for t in range(n_steps):
            total = 0.0
            for k in range(n_steps - t):
                total += (gamma * lam) ** k * delta[t + k]
                if terminated[t + k, b] or truncated[t + k, b]:
                    break
            advantages[t, b] = total
    return advantages, advantages + values


def reference_n_step_returns(rewards, bootstrap_value, terminated, truncated, final_values, gamma):
    """G_t = r_t + gamma r_{t+1} + ... + gamma^{n-1} r_{t+n-1} + gamma^n V(s_{t+n}), n up to the episode end."""
    n_steps, n_envs = rewards.shape
    returns = np.zeros((n_steps, n_envs))
    for b in range(n_envs):
        for t in range(n_steps):
            discounted_rewards, tail = 0.0, None
            for k in range(n_steps - t):
                s = t + k
                discounted_rewards += gamma**k * rewards[s, b]
                if terminated[s, b]:
                    tail = 0.0
                    break
                if truncated[s, b]:
                    tail = gamma ** (k + 1) * final_values[s, b]
                    break
            if tail is None:
                tail = gamma ** (n_steps - t) * bootstrap_value[b]
            returns[t, b] = discounted_rewards + tail
    return returns


def make_rollout(case: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    terminated = np.zeros((T, B), dtype=bool)
    truncated = np.zeros((T, B), dtype=bool)
    if case == "terminated_mid":
        terminated[T // 2, 0] = True
        terminated[1, 2] = True
        terminated[4, 2] = True
    elif case == "truncated_mid":
        truncated[T // 2, 0] = True
        truncated[1, 2] = True
        truncated[4, 2] = True
    elif case == "both_last":
        terminated[T - 1, :] = True
        truncated[T - 1, :] = True
    elif case == "mixed_last":
        terminated[T - 1, 0] = True
        truncated[T - 1, 1] = True
        terminated[T - 1, 2] = truncated[T - 1, 2] = True
    elif case == "random":
        terminated = rng.random((T, B)) < 0.15
        truncated = rng.random((T, B)) < 0.15
    else:
        assert case == "no_end"
    return {
        "rewards": rng.normal(size=(T, B)),
        "values": rng.normal(size=(T, B)),
        "bootstrap_value": rng.normal(size=B),
        "terminated": terminated,
        "truncated": truncated,
        # Nonzero everywhere: the implementation must read it only where truncated and not terminated.
        "final_values": rng.normal(size=(T, B)) + 3.0,
    }


def run_impl(r: dict[str, np.ndarray], gamma: float, lam: float, dtype=torch.float64):
    adv, ret = advantages_and_returns(
        torch.as_tensor(r["rewards"], dtype=dtype),
        torch.as_tensor(r["values"], dtype=dtype),
        torch.as_tensor(r["bootstrap_value"], dtype=dtype),
        torch.as_tensor(r["terminated"]),
        torch.as_tensor(r["truncated"]),
        torch.as_tensor(r["final_values"], dtype=dtype),
        gamma,
        lam,
    )
    return adv.numpy(), ret.numpy()


def run_reference(r: dict[str, np.ndarray], gamma: float, lam: float):
    return reference_gae(
        r["rewards"], r["values"], r["bootstrap_value"], r["terminated"], r["truncated"], r["final_values"], gamma, lam
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("gamma", "lam"), GAMMA_LAMBDA)
@pytest.mark.parametrize("case", CASES)
def test_gae_matches_slow_reference(case, gamma, lam, seed):
    r = make_rollout(case, seed)
    adv, ret = run_impl(r, gamma, lam)
    ref_adv, ref_ret = run_reference(r, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [0.99, 0.9, 1.0])
@pytest.mark.parametrize("case", CASES)
def test_lambda_one_gives_n_step_returns(case, gamma, seed):
    r = make_rollout(case, seed)
    _, ret = run_impl(r, gamma, 1.0)
    expected = reference_n_step_returns(
        r["rewards"], r["bootstrap_value"], r["terminated"], r["truncated"], r["final_values"], gamma
    )
    np.testing.assert_allclose(ret, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES)
def test_lambda_zero_gives_one_step_td(case, seed):
    gamma = 0.97
    r = make_rollout(case, seed)
    adv, ret = run_impl(r, gamma, 0.0)
    for b in range(B):
        for t in range(T):
            v_next = _next_value(
                t, b, r["values"], r["bootstrap_value"], r["terminated"], r["truncated"], r["final_values"]
            )
            td_target = r["rewards"][t, b] + gamma * v_next
            assert ret[t, b] == pytest.approx(td_target, abs=1e-10)
            assert adv[t, b] == pytest.approx(td_target - r["values"][t, b], abs=1e-10)


def test_no_episode_end_bootstraps_from_the_last_value():
    r = make_rollout("no_end", 5)
    gamma = 0.9
    _, ret = run_impl(r, gamma, 1.0)
    # The first target discounts every reward and the bootstrap value by hand.
    for b in range(B):
        expected = sum(gamma**k * r["rewards"][k, b] for k in range(T)) + gamma**T * r["bootstrap_value"][b]
        assert ret[0, b] == pytest.approx(expected, abs=1e-10)


def test_terminated_does_not_bootstrap_past_the_end():
    r = make_rollout("terminated_mid", 3)
    t_end = T // 2
    adv, ret = run_impl(r, 0.99, 0.95)
    # At the terminal step the target is just the reward.
    assert ret[t_end, 0] == pytest.approx(r["rewards"][t_end, 0], abs=1e-12)
    # Nothing after the terminal step (values, rewards, bootstrap, final_values) changes the targets before it.
    changed = {k: v.copy() for k, v in r.items()}
    changed["rewards"][t_end + 1 :, 0] += 100.0
    changed["values"][t_end + 1 :, 0] -= 50.0
    changed["bootstrap_value"][0] += 1000.0
    changed["final_values"][:, 0] += 7.0
    adv2, ret2 = run_impl(changed, 0.99, 0.95)
    np.testing.assert_array_equal(adv2[: t_end + 1, 0], adv[: t_end + 1, 0])
    np.testing.assert_array_equal(ret2[: t_end + 1, 0], ret[: t_end + 1, 0])
    assert not np.allclose(ret2[t_end + 1 :, 0], ret[t_end + 1 :, 0])


def test_truncated_bootstraps_from_final_value_and_never_across_the_boundary():
    r = make_rollout("truncated_mid", 4)
    t_end, gamma = T // 2, 0.99
    adv, ret = run_impl(r, gamma, 1.0)
    assert ret[t_end, 0] == pytest.approx(r["rewards"][t_end, 0] + gamma * r["final_values"][t_end, 0], abs=1e-12)
    # The row after the boundary belongs to the next episode: changing it never reaches back.
    changed = {k: v.copy() for k, v in r.items()}
    changed["rewards"][t_end + 1 :, 0] += 100.0
    changed["values"][t_end + 1 :, 0] -= 50.0
    changed["bootstrap_value"][0] += 1000.0
    adv2, ret2 = run_impl(changed, gamma, 1.0)
    np.testing.assert_array_equal(adv2[: t_end + 1, 0], adv[: t_end + 1, 0])
    np.testing.assert_array_equal(ret2[: t_end + 1, 0], ret[: t_end + 1, 0])
    # ... while V(final obs) of the truncated step does.
    changed = {k: v.copy() for k, v in r.items()}
    changed["final_values"][t_end, 0] += 1.0
    _, ret3 = run_impl(changed, gamma, 1.0)
    np.testing.assert_allclose(ret3[: t_end + 1, 0] - ret[: t_end + 1, 0], gamma ** np.arange(t_end + 1, 0, -1))


def test_final_values_read_only_where_truncated_and_not_terminated():
    r = make_rollout("random", 11)
    r["terminated"][2, 1] = r["truncated"][2, 1] = True  # make sure "both" occurs
    adv, ret = run_impl(r, 0.95, 0.9)
    changed = {k: v.copy() for k, v in r.items()}
    unread = ~(r["truncated"] & ~r["terminated"])
    changed["final_values"][unread] = np.random.default_rng(0).normal(size=int(unread.sum())) * 100
    adv2, ret2 = run_impl(changed, 0.95, 0.9)
    np.testing.assert_array_equal(adv2, adv)
    np.testing.assert_array_equal(ret2, ret)


@pytest.mark.parametrize("case", ["both_last", "mixed_last"])
def test_both_flags_at_the_last_step_is_terminal(case):
    r = make_rollout(case, 8)
    _, ret = run_impl(r, 0.99, 1.0)
    last = T - 1
    for b in range(B):
        if r["terminated"][last, b]:
            expected = r["rewards"][last, b]
        elif r["truncated"][last, b]:
            expected = r["rewards"][last, b] + 0.99 * r["final_values"][last, b]
        else:
            expected = r["rewards"][last, b] + 0.99 * r["bootstrap_value"][b]
        assert ret[last, b] == pytest.approx(expected, abs=1e-12)


def test_float32_inputs_keep_dtype_and_shape():
    r = make_rollout("random", 2)
    adv, ret = advantages_and_returns(
        torch.as_tensor(r["rewards"], dtype=torch.float32),
        torch.as_tensor(r["values"], dtype=torch.float32),
        torch.as_tensor(r["bootstrap_value"], dtype=torch.float32),
        torch.as_tensor(r["terminated"]),
        torch.as_tensor(r["truncated"]),
        torch.as_tensor(r["final_values"], dtype=torch.float32),
        0.99,
        0.95,
    )
    assert adv.shape == ret.shape == (T, B)
    assert adv.dtype == ret.dtype == torch.float32
    ref_adv, ref_ret = run_reference(r, 0.99, 0.95)
    np.testing.assert_allclose(adv.numpy(), ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), ref_ret, rtol=1e-5, atol=1e-5)
