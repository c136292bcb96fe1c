"""a3c-eval: a checkpoint written by the server rebuilds its env and model and plays whole episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distributed_a3c.checkpoint import save_checkpoint
from distributed_a3c.config import Config
from distributed_a3c.envs import make_vector_env
from distributed_a3c.evaluate import config_from_checkpoint, evaluate, main
from distributed_a3c.models import build_model
from distributed_a3c.server import ParameterServer


def _checkpoint(tmp_path: Path, max_steps: int) -> Path:
    cfg = Config()
    cfg.env.max_episode_steps = max_steps
    probe = make_vector_env(cfg.env, 1, 0)
    model = build_model(cfg, probe.single_observation_space, probe.single_action_space)
    server = ParameterServer(model, cfg.optim, cfg.server, cfg.train)
    state = server.state_dict()
    state["config"] = OmegaConf.to_container(OmegaConf.structured(cfg))
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, state)
    return path


def test_config_round_trips_through_the_checkpoint(tmp_path: Path) -> None:
    from distributed_a3c.checkpoint import load_checkpoint

    cfg = config_from_checkpoint(load_checkpoint(_checkpoint(tmp_path, max_steps=7)))
    assert cfg.env.max_episode_steps == 7
    assert cfg.env.id == "CartPole-v1"


def test_whole_episodes_are_played_with_the_checkpoint_time_limit(tmp_path: Path) -> None:
    # CartPole cannot fail before its 8th step (the pole starts within 0.05 rad of upright and needs longer to
    # pass 12 degrees), so with a limit of 5 steps every episode must be cut by the limit, at exactly 5.
    returns = evaluate(_checkpoint(tmp_path, max_steps=5), episodes=3)
    assert returns == [5.0, 5.0, 5.0]
    # And a limit above that length lets episodes end on their own, each within the limit.
    returns = evaluate(_checkpoint(tmp_path / "longer", max_steps=15), episodes=3)
    assert len(returns) == 3 and all(1 <= r <= 15 for r in returns)


def test_cli_takes_a_run_directory_and_prints_a_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _checkpoint(tmp_path, max_steps=10)
    assert main([str(path.parent), "--episodes", "2", "--sample"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["greedy"] is False
    assert 1 <= summary["mean_return"] <= 10


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
    assert main([str(_checkpoint(tmp_path, 5)), "--episodes", "0"]) == 2
    assert "--episodes=0" in capsys.readouterr().err
