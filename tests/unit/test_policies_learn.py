"""Every policy family must learn, not only change its weights: the Gaussian (continuous actions), the LSTM
and the CNN each reach, on a short task, an evaluated return that an untrained or broken learner misses.

The budgets are 2-3x the env steps measured on this code (seeds 1-5 or 1-3, 2-core machine), and each
test takes a few seconds: the evaluation of the current weights (eval.*) stops the run at the threshold.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import distributed_a3c.train as train
from distributed_a3c.trainer import run_serial


class SideOfSquare(gym.Env):
    """A 36x36 frame with a bright 8x8 square in its left or right half, drawn anew each step; action 0 says
    left, 1 right, and is paid 1 when right. 20 steps an episode: a random policy scores 10, a seeing one 20."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (1, 36, 36), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def _frame(self) -> np.ndarray:
        self.side = int(self.np_random.integers(2))
        frame = np.zeros((1, 36, 36), np.uint8)
        row, col = int(self.np_random.integers(0, 28)), int(self.np_random.integers(0, 10)) + 18 * self.side
        frame[0, row : row + 8, col : col + 8] = 255
        return frame

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        return self._frame(), reward, False, self.t >= 20, {}


SIDE_ID = "A3CTest/SideOfSquare-v0"
if SIDE_ID not in gym.registry:
    gym.register(SIDE_ID, entry_point=SideOfSquare)


def _learns(tmp_path: Path, overrides: list[str], target: float, budget: int, interval: int) -> dict:
    common = ["logger=quiet", "train.target_source=eval", "train.max_minutes=5"]
    common += [
        f"train.target_return={target}",
        f"train.total_env_steps={budget}",
        f"eval.interval_env_steps={interval}",
    ]
    with initialize_config_dir(config_dir=train.CONF_DIR, version_base=None):
        dcfg = compose("config", overrides=[*overrides, *common])
    cfg = train.to_config(dcfg)
    summary = run_serial(cfg, tmp_path, OmegaConf.to_container(dcfg, resolve=True), workers=1)
    assert summary["exit_reason"] == "target_return", summary["eval"]
    return summary


@pytest.mark.timeout(120)
def test_the_gaussian_policy_learns_to_balance_an_inverted_pendulum(tmp_path: Path) -> None:
    """InvertedPendulum-v5 (continuous actions): measured 200 within 10k-30k env steps; random play ~10."""
    pytest.importorskip("mujoco")  # a guard only: the test environment installs the mujoco extra
    _learns(tmp_path, ["env=inverted_pendulum", "seed=2"], target=200.0, budget=80_000, interval=10_000)


@pytest.mark.timeout(120)
def test_the_lstm_learns_acrobot(tmp_path: Path) -> None:
    """+experiment=acrobot_lstm: measured -150 within 40k-50k env steps; random play -500."""
    _learns(tmp_path, ["+experiment=acrobot_lstm", "seed=1"], target=-150.0, budget=120_000, interval=10_000)


@pytest.mark.timeout(120)
def test_the_cnn_learns_to_see_which_side_a_square_is_on(tmp_path: Path) -> None:
    """Measured 18 of 20 within 12k-16k env steps (seeds 1-5); random play 10."""
    overrides = [f"env.id={SIDE_ID}", "model=cnn", "model.conv=a3c", "model.hidden_sizes=[64]"]
    overrides += ["env.vectorization=sync", "worker.envs_per_worker=16", "worker.rollout_len=5", "optim.lr=5e-4"]
    overrides += ["seed=3"]
    _learns(tmp_path, overrides, target=18.0, budget=40_000, interval=2_000)
