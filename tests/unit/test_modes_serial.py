"""Every mode through the same trainer, in one process (trainer.run_serial): data and central solve CartPole,
a checkpoint written in one mode continues in every other, and each mode runs a few Pong rollouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import distributed_a3c.train as train  # registers `config_schema` in Hydra's ConfigStore
from distributed_a3c.checkpoint import load_checkpoint
from distributed_a3c.config import MODES, Config, validate
from distributed_a3c.trainer import run_serial

CONF = Path(__file__).resolve().parents[2] / "conf"


def _run(cfg: Config, run_dir: Path, workers: int = 2) -> dict:
    cfg.logger.wandb.mode = "disabled"
    cfg.logger.progress = False
    validate(cfg)
    return run_serial(cfg, run_dir, OmegaConf.to_container(OmegaConf.structured(cfg)), workers=workers)


@pytest.mark.parametrize("mode", ["data", "central"])
def test_experience_modes_solve_cartpole_in_process(tmp_path, mode):
    cfg = Config(mode=mode)
    cfg.train.max_minutes = 2
    summary = _run(cfg, tmp_path)
    assert summary["exit_reason"] == "target_return" and summary["mean_return_100"] >= 475, summary
    assert summary["policy_lag"]["max"] <= 1  # two workers in turn: at most one step between acting and learning
    assert summary["wire_bytes_per_env_step"] > 0


def test_a_checkpoint_of_one_mode_continues_in_every_other(tmp_path):
    first = Config(mode="grad")
    first.train.total_env_steps, first.train.target_return = 6000, None
    before = _run(first, tmp_path)
    version, steps = before["weight_version"], before["env_steps"]
    for mode in ("data", "sync", "central", "grad"):
        cfg = Config(mode=mode)
        cfg.train.total_env_steps, cfg.train.target_return = steps + 3000, None
        summary = _run(cfg, tmp_path)
        meta = json.loads((tmp_path / "meta.json").read_text())
        assert meta["resumed_from"].endswith("checkpoint.pt"), mode
        assert summary["env_steps"] >= steps + 3000 and summary["weight_version"] > version, mode
        assert load_checkpoint(tmp_path / "checkpoint.pt")["env_steps"] == summary["env_steps"]
        version, steps = summary["weight_version"], summary["env_steps"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_pong(tmp_path, mode):
    pytest.importorskip("ale_py")  # a guard only: the test environment installs the atari extra
    overrides = [
        "+experiment=pong",
        f"mode={mode}",
        "worker.envs_per_worker=2",
        "env.atari.noop_max=0",
        "train.total_env_steps=200",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = train.to_config(compose("config", overrides=overrides))
    summary = _run(cfg, tmp_path)
    assert summary["exit_reason"] == "total_env_steps" and summary["env_steps"] >= 200
    assert summary["rejected_pushes"] == 0 and summary["weight_version"] >= 1
