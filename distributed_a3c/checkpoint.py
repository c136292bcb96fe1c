"""Checkpoints that survive crashes: written atomically and durably, the last K kept, loaded safely.

A run directory holds `checkpoint.pt` (the latest) and, with `train.keep_checkpoints=K`, the K-1 before
it as `checkpoint.1.pt` (the previous), `checkpoint.2.pt`, ... A latest one that cannot be read (a disk
that filled up, a node that died mid-write) is skipped with a warning for the one before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

LATEST = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and why."""


def checkpoint_paths(run_dir: Path | str, keep: int) -> list[Path]:
    """The checkpoint files of a run directory, newest first (the ones that may exist)."""
    run_dir = Path(run_dir)
    return [run_dir / LATEST] + [run_dir / f"checkpoint.{k}.pt" for k in range(1, max(keep, 1))]


def save_checkpoint(path: Path | str, state: dict[str, Any], keep: int = 1) -> None:
    """Write `state` to `path` through a temporary file, fsync'd, then an atomic rename.

    keep > 1: the checkpoint `path` held moves to `checkpoint.1.pt` first (and so on down), so the K
    newest stay. At every moment at least one complete checkpoint exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if keep > 1 and path.name == LATEST:
        older = checkpoint_paths(path.parent, keep)
        for newer_path, older_path in zip(reversed(older[:-1]), reversed(older[1:]), strict=True):
            if newer_path.exists():
                os.replace(newer_path, older_path)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the renames durable too (a crash right after must not bring the old names back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load with `weights_only=True` (tensors and plain containers only, no arbitrary code).

    FileNotFoundError for a missing file; CheckpointError (one line) for one torch cannot read safely.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file fails in many ways (unpickling, zip, EOF, KeyError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{str(path)!r} is not a readable distributed_a3c checkpoint ({first[:160]})") from None
    return state


def load_run_checkpoint(path: Path | str) -> dict[str, Any]:
    """`load_checkpoint`, and a CheckpointError unless it holds a run's state (model, optimizer, counters)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not {"model", "optimizer", "env_steps", "version"} <= state.keys():
        raise CheckpointError(f"{str(path)!r} is not a distributed_a3c checkpoint (no model, optimizer and counters)")
    return state


def latest_checkpoint(run_dir: Path | str, keep: int) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of `run_dir` that loads, with its state; None when there is none.

    Unreadable ones are skipped with a warning; if some exist and none loads, CheckpointError.
    """
    errors = []
    for path in checkpoint_paths(run_dir, keep):
        if not path.is_file():
            continue
        try:
            return path, load_run_checkpoint(path)
        except CheckpointError as e:
            log.warning("skipping %s", e)
            errors.append(str(e))
    if errors:
        raise CheckpointError(f"no checkpoint in {str(run_dir)!r} can be read: {errors[0]}")
    return None


def mismatch(state: dict[str, Any], env_id: str, model: dict[str, Any]) -> str | None:
    """Why a checkpoint cannot continue a run of `env_id` with `model` (a config dict), or None."""
    saved = state.get("config") or {}
    saved_env = (saved.get("env") or {}).get("id")
    saved_model = saved.get("model") or {}
    keys = ("name", "hidden_sizes", "activation", "shared_torso", "conv", "lstm_size")
    differs = saved_env != env_id or any(saved_model.get(k) != model.get(k) for k in keys if k in saved_model)
    if not differs:
        return None
    saved_words, words = _model_words(saved_model), _model_words(model)
    return f"it was written for env.id={saved_env!r} model={saved_words}, this run is env.id={env_id!r} model={words}"


def _model_words(model: dict[str, Any]) -> str:
    name = model.get("name")
    detail = {"cnn": model.get("conv"), "lstm": model.get("lstm_size")}.get(name)
    sizes = list(model.get("hidden_sizes") or [])
    return f"{name}{sizes}" + (f"/{detail}" if detail is not None else "")
