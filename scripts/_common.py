"""What the benchmark scripts share: strict JSON, killing a child's process group, argument and number
formatting, their tables (rich when available, plain aligned text with --plain), running a child or an
`a3c-train` job and reading its steady state back from the metric rows, and the run's metadata.

The scripts import it as `_common`: a script's own directory is on sys.path when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def finite_json(v: Any) -> Any:
    """`v` with every non-finite float (nan, inf) as None, so the file is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [finite_json(x) for x in v]
    return v


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group `proc` leads (it was started in a session of its own)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def fmt(v: Any, spec: str = ".0f") -> str:
    """A table cell: '-' for a missing or non-finite value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def int_list(text: str) -> list[int]:
    """argparse type: '1,2,4' -> [1, 2, 4] (sorted, distinct, each >= 1)."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: need at least one count, each >= 1")
    return values


def names_from(parser: argparse.ArgumentParser, flag: str, text: str, allowed: Iterable[str]) -> list[str]:
    """A comma-separated option's names, each one of `allowed`; otherwise the parser's one-line error."""
    allowed = list(allowed)
    names = [s for s in text.split(",") if s]
    unknown = [s for s in names if s not in allowed]
    if unknown:
        parser.error(f"{flag}: unknown {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return names


Table = tuple[str, list[str], list[list[str]]]  # title, header, rows of already-formatted cells


def print_tables(tables: list[Table], plain: bool, first_column_left: bool = True) -> None:
    try:
        if plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        for title, head, body in tables:
            widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
            print(f"\n{title}")
            for row in [head, *body]:
                cells = [
                    c.ljust(w) if i == 0 and first_column_left else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                ]
                print("  ".join(cells))
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    for title, head, body in tables:
        table = RichTable(title=title)
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i == 0 and first_column_left else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)


# ----- child processes and jobs of the benchmarks ---------------------------------------------------------
RESULT_MARK = "BENCH_RESULT "
SPLIT_KEYS = ("env", "act", "learn", "wait")
ROOT = Path(__file__).resolve().parent.parent


def emit(result: dict[str, Any]) -> None:
    """A child's result: one marked JSON line on stdout, which `run_child` reads back."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def compose(overrides: list[str]):
    """The job's validated Config, as a3c-train would compose it from `overrides`."""
    from distributed_a3c.train import precheck

    return precheck(overrides)


def run_process(cmd: list[str], timeout_s: float, cwd: Path = ROOT) -> tuple[int, str, str, float]:
    """Run `cmd` in its own process group; on timeout or Ctrl-C kill the whole group. Returns rc, out, err, wall."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException:
        kill_group(proc)
        raise
    return proc.returncode, out, err, time.monotonic() - t0


def run_child(script: Path, kind: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    """`script --child kind args` in its own process group; its `emit`ted result and launch-to-exit wall."""
    cmd = [sys.executable, str(script), "--child", kind, *args]
    rc, out, err, wall = run_process(cmd, timeout_s)
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
            result["launch_to_exit_s"] = wall
            return result
    raise RuntimeError(f"bench child {kind!r} exited with code {rc} and no result:\n{tail(err or out)}")


def run_train(overrides: list[str], run_dir: Path, timeout_s: float) -> dict[str, Any]:
    """`a3c-train` as a subprocess, quiet, into `run_dir`; its summary, metric rows and launch-to-exit wall."""
    cmd = [
        sys.executable,
        "-m",
        "distributed_a3c.train",
        *with_overrides(overrides, {"logger": "quiet", "hydra.run.dir": str(run_dir)}),
    ]
    rc, out, err, wall = run_process(cmd, timeout_s)
    return finished_run(run_dir, wall, rc == 0, lambda: f"a3c-train exited with code {rc}:\n{tail(err or out)}")


def finished_run(run_dir: Path, wall: float, ok: bool, failure: Callable[[], str]) -> dict[str, Any]:
    """A finished job's summary, metric rows and launch-to-exit wall; RuntimeError(failure()) when it did
    not exit 0 (`ok`) or wrote no summary."""
    summary_path = run_dir / "summary.json"
    if not ok or not summary_path.is_file():
        raise RuntimeError(failure())
    return {"summary": json.loads(summary_path.read_text()), "rows": metrics_rows(run_dir), "launch_to_exit_s": wall}


def with_overrides(overrides: list[str], values: dict[str, Any]) -> list[str]:
    """`overrides` with each key of `values` set (an earlier setting of the same key removed)."""
    keys = set(values)
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in keys]
    return kept + [f"{k}={_hydra_value(v)}" for k, v in values.items()]


def _hydra_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


# ----- turning metric rows into numbers --------------------------------------------------------------------
def steady_state(rows: list[dict[str, Any]], summary: dict[str, Any], workers: int) -> dict[str, Any]:
    """Rates, time split, server load, staleness, drops and memory of one run."""
    live = [r for r in rows if (r.get("global_step") or 0) > 0]
    if len(live) >= 3:
        live = live[:-1]  # the stop row also spans the shutdown tail
    if len(live) >= 2:
        a, b = live[0], live[-1]
    elif live:  # too short for a window: fall back to the whole run, start-up included
        a, b = {"global_step": 0, "time/wall_s": 0.0, "server/pushes": 0, "server/busy_fraction": 0.0}, live[-1]
    else:
        raise RuntimeError("the run logged no metric row with env steps; give it a longer budget")
    dt = max(b["time/wall_s"] - a["time/wall_s"], 1e-9)
    steps = b["global_step"] - a["global_step"]
    pushes = b["server/pushes"] - a["server/pushes"]
    busy_s = b["server/busy_fraction"] * b["time/wall_s"] - a["server/busy_fraction"] * a["time/wall_s"]

    sums = dict.fromkeys(SPLIT_KEYS, 0.0)
    weight, prev = 0, None
    for r in rows:
        n = r.get("server/pushes", 0) - (prev.get("server/pushes", 0) if prev else 0)
        prev = r
        if n > 0 and all(f"worker/{k}_s" in r for k in SPLIT_KEYS):
            weight += n
            for k in SPLIT_KEYS:
                sums[k] += n * r[f"worker/{k}_s"]
    per_push = {k: v / weight for k, v in sums.items()} if weight else {}
    total = sum(per_push.values())
    split = {k: v / total for k, v in per_push.items()} if total > 0 else {}

    stale = summary.get("staleness") or {}
    if not stale:  # summary without the exact histogram: mean from rows, p99 bounded by the interval maxima
        vals = [r["server/staleness_mean"] for r in rows if "server/staleness_mean" in r]
        maxes = [r["server/staleness_max"] for r in rows if "server/staleness_max" in r]
        if vals:
            stale = {"mean": statistics.fmean(vals), "max": max(maxes), "p99_upper_bound": max(maxes)}
    total_pushes = (rows[-1].get("server/pushes") if rows else None) or 0
    dropped = summary.get("dropped_pushes", 0)
    rss = summary.get("peak_rss_mb_by_rank") or {}
    worker_rss = [v for k, v in rss.items() if k != "0"]
    return {
        "workers": workers,
        "steps_per_s": steps / dt,
        "steps_per_s_per_worker": steps / dt / workers,
        "pushes_per_s": pushes / dt,
        "window_s": dt,
        "env_steps": summary.get("env_steps"),
        "time_per_push_ms": {k: 1e3 * v for k, v in per_push.items()},
        "time_split": split,
        "server_busy_fraction": busy_s / dt,
        "staleness_mean": stale.get("mean"),
        "staleness_p99": stale.get("p99", stale.get("p99_upper_bound")),
        "staleness_max": stale.get("max"),
        "dropped_pushes": dropped,
        "dropped_fraction": dropped / total_pushes if total_pushes else 0.0,
        "peak_rss_mb_by_rank": rss,
        "peak_rss_mb_server": rss.get("0"),
        "peak_rss_mb_worker_max": max(worker_rss) if worker_rss else None,
        "exit_reason": summary.get("exit_reason"),
    }


# ----- output ----------------------------------------------------------------------------------------------
def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """Lay a matplotlib figure out, write it to `path` (making its folder) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def metrics_rows(run_dir: Path) -> list[dict]:
    """The rows a run has written to its metrics.jsonl so far ([] before the first)."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def say(prog: str, msg: str) -> None:
    print(f"{prog}: {msg}", file=sys.stderr, flush=True)


def meta(overrides: list[str], budget: str) -> dict[str, Any]:
    """Where and when a benchmark ran, on which commit, with which overrides and budget."""
    env_id = next((o.split("=", 1)[1] for o in overrides if o.startswith("env.id=")), None)
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": os.getloadavg()[0],
        "git_commit": commit or None,
        "overrides": overrides,
        "env_id": env_id or _env_of(overrides),
        "budget": budget,
    }


def _env_of(overrides: list[str]) -> str:
    group = next((o.split("=", 1)[1] for o in overrides if o.startswith("env=")), "cartpole")
    path = ROOT / "conf" / "env" / f"{group}.yaml"
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.strip().startswith("id:"):
            return line.split(":", 1)[1].strip()
    return group


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Strict JSON (non-finite floats as null; paths as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite_json(results), indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
