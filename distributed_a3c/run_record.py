"""What a run leaves behind besides its metrics: summary.json (its figures, the objective a sweeper
optimizes) and meta.json (what ran, where and when)."""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from distributed_a3c.config import OBJECTIVES
from distributed_a3c.server import ParameterServer, WorkerRoster
from distributed_a3c.worker import peak_rss_mb


def objective_value(summary: dict[str, Any], name: str) -> float:
    """The value of objective `name` for a finished run's summary. A target never reached is +inf for
    the objectives to minimize; a return never measured is -inf."""
    reached = summary.get("exit_reason") == "target_return"
    evaluation = summary.get("eval") or {}
    if name == "mean_return_100":
        value = summary.get("mean_return_100")
        return float("-inf") if value is None else float(value)
    if name == "eval_mean_return":
        value = evaluation.get("last_mean_return")
        return float("-inf") if value is None else float(value)
    if name == "env_steps_to_target":
        at = evaluation.get("first_global_step_at_target")
        if at is not None:
            return float(at)
        return float(summary["env_steps"]) if reached else math.inf
    if name == "time_to_target":
        return float(summary["wall_time_s"]) if reached else math.inf
    raise ValueError(f"train.objective={name!r} is invalid: must be one of {', '.join(OBJECTIVES)}")


def run_summary(
    server: ParameterServer, world_size: int, other_shards: list[dict] | None, roster: WorkerRoster
) -> dict[str, Any]:
    stats = server.stats
    rets = list(stats.returns)
    attempt = max(stats.attempt_s(), 1e-9)  # the busy-time counters start again with each attempt
    rss = {r: s.get("worker/max_rss_mb") for r, s in sorted(stats.last_stats.items())}
    worker_rss = {str(r): round(v, 1) for r, v in rss.items() if v is not None}
    counters = server.counters()
    return {
        "exit_reason": server.stop_reason,
        "env_steps": stats.env_steps,
        "episodes": stats.episodes,
        "mean_return_100": round(sum(rets) / len(rets), 2) if rets else None,
        "wall_time_s": round(stats.elapsed_s(), 3),
        "weight_version": counters["version"],
        "pushes_per_rank": {str(r): stats.pushes_by_rank.get(r, 0) for r in roster.ranks},
        "lost_workers": {str(r): why for r, why in sorted(roster.lost.items())},
        "dropped_pushes": counters["dropped"],
        "rejected_pushes": counters["rejected"],
        "staleness": stats.staleness_summary(),
        "policy_lag": stats.policy_lag_summary(),
        "server_busy_fraction": round(counters["busy_s"] / attempt, 4),
        "wire_bytes_per_env_step": round(
            sum(s["wire_bytes"] for s in [counters, *(other_shards or [])]) / max(stats.env_steps, 1), 1
        ),
        "shards": [
            {
                "shard": k,
                "version": s["version"],
                "pushes": s["pushes"],
                "busy_fraction": round(s["busy_s"] / attempt, 4),
            }
            for k, s in enumerate([server.shard_stats(), *(other_shards or [])])
        ],
        "peak_rss_mb_by_rank": {"0": round(peak_rss_mb(), 1), **worker_rss},
    }


def run_meta(resumed_from: Path | None) -> dict[str, Any]:
    """What ran, where and when: versions, git commit, hosts, command line."""
    import importlib.metadata

    return {
        "package_version": importlib.metadata.version("distributed_a3c"),
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "gymnasium": importlib.metadata.version("gymnasium"),
        "python": platform.python_version(),
        "hosts": {"0": socket.gethostname()},
        "command": sys.argv,
        "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "start_time": now_iso(),
        "end_time": None,
        "exit_reason": None,
    }


def _git_commit() -> str | None:
    """The commit of the checkout the package runs from, when it runs from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
