"""Curves without a server (a3c-plot), the TensorBoard sink, the objective a sweep job returns, the video
extra and the Atari env presets that compose alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

import distributed_a3c.train as train
from distributed_a3c import evaluate, plot
from distributed_a3c.metrics import TensorBoardSink
from distributed_a3c.run_record import objective_value


def _run(path: Path, seed: int, steps: int = 5) -> Path:
    path.mkdir(parents=True)
    rows = [
        {
            "global_step": 1000 * (i + 1),
            "time/wall_s": float(i),
            "charts/mean_return_100": 10.0 * i + seed,
            "charts/min_return_100": 0.0,
            "charts/max_return_100": 100.0,
            "losses/policy_loss": 0.1,
            "charts/SPS": 500.0,
            "server/staleness_mean": 1.0,
        }
        for i in range(steps)
    ]
    rows.append({"global_step": 2500, "eval/mean_return": 42.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "env": {"id": "CartPole-v1"}}))
    return path


def test_a3c_plot_draws_runs_and_a_multirun_directory(tmp_path: Path) -> None:
    for job in (0, 1):
        _run(tmp_path / "sweep" / str(job), seed=job)
    assert plot.run_dirs([tmp_path / "sweep"]) == [tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"]
    for extra in ([], ["--mean", "--x", "minutes"]):
        out = tmp_path / f"curves{len(extra)}.png"
        assert plot.main([str(tmp_path / "sweep"), "--out", str(out), *extra]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_a3c_plot_of_a_directory_without_metrics_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert plot.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no metrics.jsonl" in err[0] and str(tmp_path) in err[0]


def test_the_tensorboard_sink_writes_every_metric_at_its_step(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardSink(tmp_path)
    sink.log({"global_step": 100, "charts/SPS": 5.0, "losses/entropy": 0.5, "charts/mean_return_100": math.inf})
    sink.log({"global_step": 200, "charts/SPS": 7.0})
    sink.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("charts/SPS")] == [(100, 5.0), (200, 7.0)]
    assert "losses/entropy" in events.Tags()["scalars"]
    assert "charts/mean_return_100" not in events.Tags()["scalars"]  # not finite: not written


@pytest.mark.parametrize(
    ("name", "summary", "expected"),
    [
        ("mean_return_100", {"mean_return_100": 480.5}, 480.5),
        ("mean_return_100", {"mean_return_100": None}, -math.inf),
        ("eval_mean_return", {"eval": {"last_mean_return": 500.0}}, 500.0),
        ("env_steps_to_target", {"eval": {"first_global_step_at_target": 9000}, "env_steps": 12000}, 9000.0),
        ("env_steps_to_target", {"exit_reason": "target_return", "env_steps": 12000}, 12000.0),
        ("env_steps_to_target", {"exit_reason": "max_minutes", "env_steps": 12000}, math.inf),
        ("time_to_target", {"exit_reason": "target_return", "wall_time_s": 5.5}, 5.5),
        ("time_to_target", {"exit_reason": "total_env_steps", "wall_time_s": 5.5}, math.inf),
    ],
)
def test_the_objective_of_a_finished_run(name: str, summary: dict, expected: float) -> None:
    assert objective_value(summary, name) == expected


def test_video_without_moviepy_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    real = evaluate.importlib.util.find_spec
    monkeypatch.setattr(evaluate.importlib.util, "find_spec", lambda name: None if name == "moviepy" else real(name))
    assert evaluate.main(["somewhere", "--video", "videos"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["a3c-eval: error: --video needs moviepy: pip install 'distributed_a3c[video]'"]


@pytest.mark.parametrize("env", ["pong", "breakout"])
def test_an_atari_env_preset_alone_is_a_working_job(env: str) -> None:
    pytest.importorskip("ale_py")  # a guard only: the test environment installs the atari extra
    with initialize_config_dir(config_dir=train.CONF_DIR, version_base=None):
        cfg = train.to_config(compose("config", overrides=[f"env={env}"]))
    assert cfg.model.name == "cnn" and cfg.env.id.startswith("ALE/")
