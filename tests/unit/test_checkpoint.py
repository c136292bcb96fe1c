"""Checkpoints that survive crashes: the last K kept, an unreadable latest skipped, foreign ones refused."""

from __future__ import annotations

import logging

import pytest
import torch

from distributed_a3c.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_run_checkpoint,
    mismatch,
    save_checkpoint,
)


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "optimizer": {}, "env_steps": step, "version": step}


def test_keeps_the_newest_k_checkpoints_under_stable_names(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path / "checkpoint.pt", _state(step), keep=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.1.pt", "checkpoint.2.pt", "checkpoint.pt"]
    newest_first = ("checkpoint.pt", "checkpoint.1.pt", "checkpoint.2.pt")
    steps = [load_checkpoint(tmp_path / n)["env_steps"] for n in newest_first]
    assert steps == [5, 4, 3]


def test_keep_one_overwrites_in_place(tmp_path):
    for step in range(1, 4):
        save_checkpoint(tmp_path / "checkpoint.pt", _state(step), keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_an_unreadable_latest_checkpoint_falls_back_to_the_one_before_with_a_warning(tmp_path, caplog):
    save_checkpoint(tmp_path / "checkpoint.pt", _state(1), keep=2)
    save_checkpoint(tmp_path / "checkpoint.pt", _state(2), keep=2)
    (tmp_path / "checkpoint.pt").write_bytes(b"half a checkpoint: the node died mid-write")
    with caplog.at_level(logging.WARNING):
        path, state = latest_checkpoint(tmp_path, keep=2)
    assert path.name == "checkpoint.1.pt" and state["env_steps"] == 1
    assert "checkpoint.pt" in caplog.text and "not a readable" in caplog.text


def test_a_run_directory_without_checkpoints_has_none_and_one_with_only_broken_ones_is_an_error(tmp_path):
    assert latest_checkpoint(tmp_path, keep=2) is None
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be read"):
        latest_checkpoint(tmp_path, keep=2)


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError) as info:
        load_run_checkpoint(text)
    assert "notes.txt" in str(info.value) and "\n" not in str(info.value)
    tensors_only = tmp_path / "tensors.pt"
    torch.save({"x": torch.zeros(2)}, tensors_only)
    with pytest.raises(CheckpointError, match="is not a distributed_a3c checkpoint"):
        load_run_checkpoint(tensors_only)


def test_a_checkpoint_of_another_env_or_model_is_named_with_both():
    saved = {"config": {"env": {"id": "CartPole-v1"}, "model": {"name": "mlp", "hidden_sizes": [64, 64]}}}
    same = {"name": "mlp", "hidden_sizes": [64, 64]}
    assert mismatch(saved, "CartPole-v1", same) is None
    why = mismatch(saved, "Acrobot-v1", {"name": "mlp", "hidden_sizes": [128]})
    assert why is not None
    assert "CartPole-v1" in why and "Acrobot-v1" in why and "[64, 64]" in why and "[128]" in why
