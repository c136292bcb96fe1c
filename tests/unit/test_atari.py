"""Atari on real ALE games: DeepMind preprocessing, raw scores under clipped rewards, life-loss terminals,
the same observations and info contract from every backend, the Nature CNN, and a Worker training on Pong
against an in-process ParameterServer."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch

from distributed_a3c.config import (
    AtariConfig,
    Config,
    EnvConfig,
    ModelConfig,
    TrainConfig,
    WorkerConfig,
    validate,
)
from distributed_a3c.envs import all_errors, final_observations, finished_episodes, make_env_fn, make_vector_env
from distributed_a3c.models import CNNActorCritic, UnsupportedSpaceError, build_policy

pytest.importorskip("ale_py")  # a guard only: the test environment installs the atari extra
# (test_atari_missing.py runs without it: the one-line error for a missing ale-py)

NATIVE = ["ale_vector"] + (["envpool"] if importlib.util.find_spec("envpool") else [])
BACKENDS = ["gymnasium", *NATIVE]
OBS_SPACE = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


def _env_cfg(game: str, backend: str = "gymnasium", max_episode_steps: int | None = None, **atari) -> EnvConfig:
    atari.setdefault("num_threads", 1)  # the test machine's cores are shared
    return EnvConfig(
        id=f"ALE/{game}-v5", backend=backend, max_episode_steps=max_episode_steps, atari=AtariConfig(**atari)
    )


def _run(cfg: EnvConfig, steps: int, num_envs: int = 1, seed: int = 3, stop_after_episode: bool = False) -> dict:
    """Step `num_envs` envs with a fixed random action sequence; everything the worker would read, per step."""
    envs = make_vector_env(cfg, num_envs, seed)
    out: dict = {"obs": [], "rewards": [], "terminated": [], "truncated": [], "final_obs": [], "episodes": []}
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(num_envs)])
        out["obs"].append(obs.copy())
        out["spaces"] = (envs.single_observation_space, envs.single_action_space)
        rng = np.random.default_rng(0)
        for _ in range(steps):
            obs, rewards, terminated, truncated, info = envs.step(rng.integers(0, envs.single_action_space.n, num_envs))
            ended = np.flatnonzero(terminated | truncated)
            out["obs"].append(obs.copy())
            out["rewards"].append(np.asarray(rewards, dtype=np.float64))
            out["terminated"].append(terminated.copy())
            out["truncated"].append(truncated.copy())
            out["final_obs"].append(
                {int(i): f for i, f in zip(ended, final_observations(info, ended), strict=True)} if ended.size else {}
            )
            out["episodes"].append(finished_episodes(info))
            if stop_after_episode and out["episodes"][-1][0]:
                break
    finally:
        envs.close()
    return {k: (np.array(v) if k in ("obs", "rewards", "terminated", "truncated") else v) for k, v in out.items()}


# ----- preprocessing -----------------------------------------------------------------------------------------
def test_gymnasium_wrappers_give_stacked_84x84_uint8_frames_zero_padded_at_reset():
    env = make_env_fn(_env_cfg("Pong"))()
    try:
        assert env.observation_space == OBS_SPACE
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        assert not obs[:3].any() and obs[3].any()  # oldest first: zeros before the episode's first frame
        obs, *_ = env.step(0)
        assert not obs[:2].any() and obs[2].any() and obs[3].any()
    finally:
        env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipped_rewards_for_the_loss_raw_score_in_the_episode_stats(backend):
    # SpaceInvaders pays 5..30 points per invader, so clipping changes the sum; 120 steps end by truncation.
    run = _run(_env_cfg("SpaceInvaders", backend, max_episode_steps=120), 200, stop_after_episode=True)
    assert set(np.unique(run["rewards"])) <= {-1.0, 0.0, 1.0}
    (ret,), (length,) = run["episodes"][-1]
    assert ret > run["rewards"].sum() > 0 and ret % 5 == 0  # the raw score, not the clipped sum
    assert length == len(run["rewards"]) and run["truncated"][-1, 0]
    if backend == "gymnasium":  # the unclipped run pays exactly the recorded score
        raw = _run(_env_cfg("SpaceInvaders", backend, max_episode_steps=120, clip_rewards=False), length)
        np.testing.assert_array_equal(run["rewards"], np.sign(raw["rewards"]))
        assert raw["rewards"].sum() == ret and raw["episodes"][-1] == run["episodes"][-1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_life_loss_is_a_terminal_for_the_loss_while_the_game_and_its_score_go_on(backend):
    run = _run(_env_cfg("Breakout", backend, terminal_on_life_loss=True), 400, stop_after_episode=True)
    game_over = next(t for t, (r, _) in enumerate(run["episodes"]) if r)
    life_losses = [t for t in range(game_over) if run["terminated"][t, 0]]
    assert len(life_losses) == 4  # 5 lives: four lost lives before the game ends
    for t in life_losses:
        assert run["episodes"][t] == ([], [])
        np.testing.assert_array_equal(run["final_obs"][t][0], run["obs"][t + 1, 0])  # no reset: same frame
    (ret,), (length,) = run["episodes"][game_over]
    assert length == game_over + 1 and ret == run["rewards"][: game_over + 1].sum()
    assert run["terminated"][game_over, 0]
    assert not run["obs"][game_over + 1, 0, :3].any()  # a new game: its stack starts with zeros
    if backend == "gymnasium":  # off (the default): only the end of the game is a terminal
        without = _run(_env_cfg("Breakout", backend, terminal_on_life_loss=False), game_over + 1)
        assert without["terminated"].sum() == 1 and without["episodes"][game_over] == run["episodes"][game_over]


@pytest.mark.parametrize("backend", NATIVE)
def test_native_backends_match_the_gymnasium_wrappers_step_for_step(backend):
    # Without random no-ops and sticky actions the emulator is deterministic: every backend must give the
    # same frames, rewards, terminals, final observations and episode statistics.
    def run(b: str) -> dict:
        return _run(_env_cfg("Breakout", b, noop_max=0, terminal_on_life_loss=True), 300)

    ref, got = run("gymnasium"), run(backend)
    assert got["spaces"] == ref["spaces"] == (OBS_SPACE, gym.spaces.Discrete(4))
    assert got["obs"].dtype == np.uint8 and got["obs"].shape == (301, 1, 4, 84, 84)
    np.testing.assert_array_equal(got["obs"], ref["obs"])
    np.testing.assert_array_equal(got["rewards"], ref["rewards"])
    np.testing.assert_array_equal(got["terminated"], ref["terminated"])
    np.testing.assert_array_equal(got["truncated"], ref["truncated"])
    assert got["episodes"] == ref["episodes"] and any(r for r, _ in ref["episodes"])
    assert [sorted(f) for f in got["final_obs"]] == [sorted(f) for f in ref["final_obs"]]
    for g, r in zip(got["final_obs"], ref["final_obs"], strict=True):
        for i in r:
            np.testing.assert_array_equal(g[i], r[i])


# ----- the CNN -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("conv", "conv_params"), [("nature", 77_984), ("a3c", 12_336)])
def test_cnn_forward_sample_value_shapes(conv, conv_params):
    torch.manual_seed(0)
    model = build_policy("cnn", OBS_SPACE, gym.spaces.Discrete(6), hidden_sizes=[512], activation="relu", conv=conv)
    assert isinstance(model, CNNActorCritic)
    conv_layers = model.torso[0]
    assert (
        isinstance(conv_layers, torch.nn.Sequential) and sum(p.numel() for p in conv_layers.parameters()) == conv_params
    )
    obs = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    logits, values = model(obs)
    assert logits.shape == (5, 6) and values.shape == (5,)
    actions = model.sample(logits)
    assert actions.shape == (5,) and actions.dtype == torch.long and ((actions >= 0) & (actions < 6)).all()
    assert model.value(obs).shape == (5,)
    torch.testing.assert_close(model.value(obs), values)
    dist = model.distribution(logits)
    assert dist.log_prob(actions).shape == (5,) and dist.entropy().shape == (5,)
    # Near-uniform initial policy (head gain 0.01); pixels are scaled inside: uint8 and float agree.
    assert dist.entropy().min() > 0.99 * np.log(6)
    torch.testing.assert_close(model(obs.float())[1], values)


@pytest.mark.parametrize(
    ("obs_space", "action_space"),
    [
        (gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)),
        (gym.spaces.Box(0, 255, (4, 20, 20), np.uint8), gym.spaces.Discrete(2)),
        (OBS_SPACE, gym.spaces.Box(-1, 1, (2,))),
    ],
)
def test_cnn_rejects_spaces_it_cannot_take(obs_space, action_space):
    with pytest.raises(UnsupportedSpaceError, match="model=cnn"):
        build_policy("cnn", obs_space, action_space, hidden_sizes=[512], activation="relu")


# ----- config --------------------------------------------------------------------------------------------------
def test_config_rules_for_atari():
    cfg = Config(env=EnvConfig(id="CartPole-v1", backend="ale_vector", atari=AtariConfig(frame_skip=0)))
    errors = all_errors(cfg)
    assert any(e.startswith("env.backend='ale_vector' is invalid: must be gymnasium") for e in errors)
    assert "env.atari.frame_skip=0 is invalid: must be >= 1" in errors
    errors = all_errors(Config(model=ModelConfig(conv="resnet")))
    assert "model.conv='resnet' is invalid: must be one of nature, a3c" in errors
    errors = all_errors(Config(env=EnvConfig(id="ALE/Pong-v5", backend="nope")))
    assert any(e.startswith("env.backend='nope' is invalid: must be one of gymnasium") for e in errors)
    assert any(e.startswith("model.name='mlp' is invalid: must be cnn for ALE") for e in errors)
    ok = Config(env=EnvConfig(id="ALE/Pong-v5"), model=ModelConfig(name="cnn", hidden_sizes=[512], shared_torso=True))
    assert all_errors(ok) == []


# ----- a worker on Pong --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["gymnasium", "ale_vector"])
def test_worker_trains_on_pong_against_an_in_process_server(backend):
    from distributed_a3c.models import build_model
    from distributed_a3c.server import ParameterServer
    from distributed_a3c.worker import Worker

    cfg = validate(
        Config(
            env=_env_cfg("Pong", backend),
            model=ModelConfig(name="cnn", hidden_sizes=[64], activation="relu", shared_torso=True),
            worker=WorkerConfig(envs_per_worker=2, rollout_len=5),
            train=TrainConfig(total_env_steps=10**9, target_return=None, max_minutes=None),
        )
    )
    server = ParameterServer(build_model(cfg, OBS_SPACE, gym.spaces.Discrete(6)), cfg.optim, cfg.server, cfg.train)
    initial = server.flat.weights.clone()
    w = Worker(cfg, 1, server)
    try:
        assert w.obs.dtype == torch.uint8 and w.obs.shape == (2, 4, 84, 84)  # uint8 until the model scales it
        w._apply(server.pull())
        for _ in range(3):
            w.step()
    finally:
        w.envs.close()
    assert server.version == 3 and server.stats.env_steps == 3 * 2 * 5
    assert not torch.equal(server.flat.weights, initial)
    assert torch.isfinite(server.flat.weights).all()
