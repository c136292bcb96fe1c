"""The run lifecycle without RPC: trainer.run_serial drives the same Trainer a distributed run does, with
in-process workers, and leaves the same run directory; a second call continues from its checkpoint."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from distributed_a3c.checkpoint import load_checkpoint
from distributed_a3c.config import Config, validate
from distributed_a3c.trainer import run_serial


def _cfg(steps: int) -> Config:
    cfg = Config()
    cfg.logger.wandb.mode = "disabled"
    cfg.logger.progress = False
    cfg.train.total_env_steps = steps
    cfg.train.target_return = None
    cfg.train.log_interval_s = 0.05
    return validate(cfg)


def test_serial_run_leaves_a_run_directory_and_a_restart_continues_it(tmp_path):
    cfg = _cfg(4000)
    config_dict = OmegaConf.to_container(OmegaConf.structured(cfg))
    summary = run_serial(cfg, tmp_path, config_dict, workers=2)
    assert summary["exit_reason"] == "total_env_steps" and summary["env_steps"] >= 4000
    assert set(summary["pushes_per_rank"]) == {"1", "2"} and all(summary["pushes_per_rank"].values())
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["exit_reason"] == "total_env_steps" and meta["end_time"] >= meta["start_time"]
    assert meta["torch"] and meta["gymnasium"] and meta["python"] and meta["package_version"]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["global_step"] == summary["env_steps"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["env_steps"] == summary["env_steps"]

    more = _cfg(8000)  # the same run directory: the run resumes from its checkpoint
    again = run_serial(more, tmp_path, OmegaConf.to_container(OmegaConf.structured(more)), workers=2)
    assert again["env_steps"] >= 8000 and again["weight_version"] > summary["weight_version"]
    assert json.loads((tmp_path / "meta.json").read_text())["resumed_from"].endswith("checkpoint.pt")
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["global_step"] == again["env_steps"]  # appended to, not rewritten
    assert any(r["global_step"] <= summary["env_steps"] for r in rows)


def test_serial_orders_are_deterministic_per_seed_and_differ_from_each_other(tmp_path):
    cfg = _cfg(3000)
    config_dict = OmegaConf.to_container(OmegaConf.structured(cfg))
    runs = {}
    for order in ("round-robin", "shuffled", "random", "random"):
        run_dir = tmp_path / f"{order}-{len(runs)}"
        run_dir.mkdir()
        summary = run_serial(cfg, run_dir, config_dict, workers=2, order=order)
        runs.setdefault(order, []).append(summary["pushes_per_rank"])
    assert runs["random"][0] == runs["random"][1], "the same seed draws the same order"
    for order in ("round-robin", "shuffled"):  # each worker once per round
        counts = list(runs[order][0].values())
        assert max(counts) - min(counts) <= 1, (order, counts)
    with pytest.raises(ValueError, match="order='fifo' is invalid"):
        run_serial(cfg, tmp_path, config_dict, workers=2, order="fifo")
