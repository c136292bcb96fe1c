"""Every env family through the entry point's code path: classic control (discrete / continuous), Box2D and
MuJoCo train a few real updates; unsupported spaces and missing optional packages fail with one line."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from distributed_a3c.checkpoint import load_checkpoint
from distributed_a3c.config import Config
from distributed_a3c.envs import all_errors, make_env_fn
from distributed_a3c.models import UnsupportedSpaceError, build_model, build_policy
from distributed_a3c.server import ParameterServer
from distributed_a3c.train import precheck
from distributed_a3c.worker import Worker

SMALL = ["worker.envs_per_worker=2", "worker.rollout_len=4", "train.target_return=null"]


def _updates(overrides: list[str], pushes: int = 3) -> tuple[Config, ParameterServer]:
    """Compose + validate as `a3c-train` does, then train `pushes` updates in-process."""
    cfg = precheck([*overrides, *SMALL])
    env = make_env_fn(cfg.env)()
    server = ParameterServer(
        build_model(cfg, env.observation_space, env.action_space), cfg.optim, cfg.server, cfg.train
    )
    env.close()
    before = server.flat.weights.clone()
    worker = Worker(cfg, 1, server)
    worker._apply(server.pull())
    for _ in range(pushes):
        reply = worker.step()
        assert reply.status == "applied"
    worker.envs.close()
    assert server.version == pushes and server.stats.env_steps == pushes * 2 * 4
    assert not torch.equal(before, server.flat.weights) and torch.isfinite(server.flat.weights).all()
    return cfg, server


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(["env=acrobot"], id="classic-discrete"),
        pytest.param(["env=pendulum"], id="classic-continuous"),
        pytest.param(["env=lunarlander"], id="box2d-discrete"),
        pytest.param(["env=lunarlander", "+env.kwargs.continuous=true"], id="box2d-continuous"),
        pytest.param(["env=inverted_pendulum"], id="mujoco"),
        pytest.param(["env=halfcheetah", "model=lstm"], id="mujoco-lstm"),
    ],
)
def test_each_family_trains_a_few_updates(overrides):
    cfg, server = _updates(overrides)
    env = make_env_fn(cfg.env)()
    continuous = isinstance(env.action_space, gym.spaces.Box)
    env.close()
    assert continuous == server.model.continuous
    if cfg.env.normalize_obs:
        assert server.obs_stats is not None and server.obs_stats.count == 3 * 2 * 4
    else:
        assert server.obs_stats is None


def test_the_continuous_lunar_lander_has_a_gaussian_policy():
    cfg, server = _updates(["env=lunarlander", "+env.kwargs.continuous=true"], pushes=1)
    assert cfg.env.kwargs == {"continuous": True}
    assert server.model.log_std.shape == (2,)


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a3c_train_runs_pendulum_with_shared_statistics_over_rpc(jobs, tmp_path: Path):
    run_dir = tmp_path / "run"
    overrides = ["env=pendulum", "workers=1", "worker.envs_per_worker=4", "train.total_env_steps=1280"]
    done, summary = jobs.train(overrides, run_dir, timeout=150)
    assert summary["exit_reason"] == "total_env_steps", done.describe()
    stats = load_checkpoint(run_dir / "checkpoint.pt")["obs_stats"]
    assert stats["count"] >= 1280 and len(stats["mean"]) == 3  # merged from the worker, checkpointed
    assert min(stats["mean"][:2]) >= -1 and max(stats["mean"][:2]) <= 1  # cos / sin of the angle


# ----- unsupported spaces ---------------------------------------------------------------------------------


class _SpacesEnv(gym.Env):
    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


FLAT = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
DICT_OBS = gym.spaces.Dict({"position": FLAT, "goal": FLAT})
IMAGE_OBS = gym.spaces.Box(0, 255, (48, 48, 3), np.uint8)
MULTI_DISCRETE = gym.spaces.MultiDiscrete([3, 2])
BOX_2D_ACTIONS = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)
TEST_ENVS = {
    "TestSpaces/DictObs-v0": (DICT_OBS, gym.spaces.Discrete(2)),
    "TestSpaces/ImageObs-v0": (IMAGE_OBS, gym.spaces.Discrete(2)),
    "TestSpaces/MultiDiscrete-v0": (FLAT, MULTI_DISCRETE),
    "TestSpaces/MatrixActions-v0": (FLAT, BOX_2D_ACTIONS),
}
for _id, (_obs, _act) in TEST_ENVS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=_SpacesEnv, kwargs={"observation_space": _obs, "action_space": _act})


@pytest.mark.parametrize(
    ("env_id", "model", "names"),
    [
        ("TestSpaces/DictObs-v0", "mlp", "observation space Dict("),
        ("TestSpaces/DictObs-v0", "lstm", "observation space Dict("),
        ("TestSpaces/ImageObs-v0", "mlp", "observation space Box(0, 255, (48, 48, 3)"),
        ("TestSpaces/MultiDiscrete-v0", "mlp", "action space MultiDiscrete([3 2])"),
        ("TestSpaces/MatrixActions-v0", "lstm", "action space Box(-1.0, 1.0, (2, 2)"),
    ],
)
def test_unsupported_spaces_fail_validation_with_one_line_naming_the_space(env_id, model, names, capsys):
    with pytest.raises(SystemExit) as exit_info:
        precheck([f"env.id={env_id}", f"model={model}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"a3c-train: error: env.id={env_id!r} is unsupported: ") and names in err, err
    assert f"model={model}" in err or "action space" in err


def test_the_policy_itself_raises_unsupported_space_error():
    for name in ("mlp", "lstm"):
        with pytest.raises(UnsupportedSpaceError, match=r"Dict\("):
            build_policy(name, DICT_OBS, gym.spaces.Discrete(2), hidden_sizes=[8], shared_torso=True)
        with pytest.raises(UnsupportedSpaceError, match="MultiDiscrete"):
            build_policy(name, FLAT, MULTI_DISCRETE, hidden_sizes=[8], shared_torso=True)


# ----- missing optional packages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "module", "message"),
    [
        ("lunarlander", "Box2D", "env.id='LunarLander-v3' needs Box2D: pip install 'distributed_a3c[box2d]'"),
        (
            "inverted_pendulum",
            "mujoco",
            "env.id='InvertedPendulum-v5' needs MuJoCo: pip install 'distributed_a3c[mujoco]'",
        ),
        ("halfcheetah", "imageio", "env.id='HalfCheetah-v5' needs MuJoCo: pip install 'distributed_a3c[mujoco]'"),
    ],
)
def test_a_missing_extra_fails_validation_with_the_pip_command(preset, module, message, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        precheck([f"env={preset}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"a3c-train: error: {message}\n"


def test_a_missing_extra_is_reported_with_every_other_broken_rule(monkeypatch):
    monkeypatch.setitem(sys.modules, "Box2D", None)
    cfg = Config()
    cfg.env.id = "LunarLander-v3"
    cfg.optim.lr = -1.0
    errors = all_errors(cfg)
    assert "optim.lr=-1.0 is invalid: must be > 0" in errors
    assert "env.id='LunarLander-v3' needs Box2D: pip install 'distributed_a3c[box2d]'" in errors


def test_installed_extras_pass_validation():
    for env_id in ("LunarLander-v3", "InvertedPendulum-v5", "CartPole-v1"):
        cfg = Config()
        cfg.env.id = env_id
        assert all_errors(cfg) == []
