"""Options the chosen mode does not use: said once at start, and the job runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distributed_a3c.config.choices import EXPERIENCE_MODES, STEP_BOUND_KEYS

if TYPE_CHECKING:
    from distributed_a3c.config.schema import Config


def unused_options(cfg: Config, defaults: Config) -> list[str]:
    """Options set away from their default that the chosen mode does not use, one line each (said once at
    start; the job runs)."""
    unused = []

    def note(key: str, value: object, default: object, used_by: str) -> None:
        if value != default:
            unused.append(f"{key}={value!r} is unused with mode={cfg.mode} (it applies to {used_by})")

    if cfg.mode != "central":
        note("central.max_batch", cfg.central.max_batch, defaults.central.max_batch, "mode=central")
        note("central.max_wait_ms", cfg.central.max_wait_ms, defaults.central.max_wait_ms, "mode=central")
    if cfg.mode in EXPERIENCE_MODES:
        note("server.fold", cfg.server.fold, defaults.server.fold, "mode=grad; the learner batches rollouts anyway")
    if cfg.mode == "central":
        note(
            "server.wire_dtype",
            cfg.server.wire_dtype,
            defaults.server.wire_dtype,
            "weights, which mode=central never sends",
        )
    if cfg.mode == "sync":
        note(
            "server.max_staleness", cfg.server.max_staleness, defaults.server.max_staleness, "mode=grad, data, central"
        )
    for mode, key in STEP_BOUND_KEYS.items():
        if cfg.mode != mode:
            note(f"scale.{key}", getattr(cfg.scale, key), getattr(defaults.scale, key), f"mode={mode}")
    return unused
