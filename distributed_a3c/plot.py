"""Curves without a server: `a3c-plot RUN_DIR... [--x steps|frames|minutes|time] [--mean] [--out FILE]`.

Reads each run directory's `metrics.jsonl` (and `config.yaml` for the legend) and draws the main charts
into one PNG: the return (mean of the last 100 training episodes with its min-max band, and the evaluated
return when `eval.*` was on), the losses, env steps per second and the staleness. A multirun directory
(`multirun/<date>/<time>`) stands for every run in it. With --mean, the runs are drawn as their mean and
spread (min to max) instead of one line each: seeds of one recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

PROG = "a3c-plot"
X_AXES = {
    "steps": ("global_step", "env steps (all workers)"),
    "frames": ("global_step", "env frames (env steps x frame skip)"),
    "minutes": ("time/wall_s", "wall time (min)"),
    "time": ("time/wall_s", "wall time (s)"),
}
PANELS = [
    ("return", ["charts/mean_return_100", "eval/mean_return"]),
    ("losses", ["losses/policy_loss", "losses/value_loss", "losses/entropy"]),
    ("env steps / s", ["charts/SPS"]),
    ("staleness (versions)", ["server/staleness_mean"]),
]


NAMES = {"charts/mean_return_100": "training episodes (last 100)", "eval/mean_return": "evaluation"}
"""Legend names of the series that share a panel (the others go by the last part of their metric name)."""


class PlotError(ValueError):
    """A run directory that cannot be plotted; the message is one line."""


def run_dirs(paths: list[Path]) -> list[Path]:
    """The run directories named, a multirun directory standing for the runs in it."""
    runs: list[Path] = []
    for path in paths:
        if (path / "metrics.jsonl").is_file():
            runs.append(path)
            continue
        inside = sorted((p for p in path.glob("*/metrics.jsonl")), key=lambda p: _job_order(p.parent.name))
        if not inside:
            raise PlotError(f"{str(path)!r} has no metrics.jsonl (nor do its subdirectories): give a run directory")
        runs += [p.parent for p in inside]
    return runs


def _job_order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (10**9, name)


def load_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def run_config(run: Path) -> dict:
    import yaml  # PyYAML comes with Hydra and OmegaConf

    path = run / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def x_scale(x: str, cfg: dict) -> float:
    """Emulator frames per env step for --x frames (ALE ids), minutes per second for --x minutes."""
    if x == "minutes":
        return 1 / 60
    env = cfg.get("env") or {}
    if x == "frames" and str(env.get("id", "")).startswith("ALE/"):
        return float((env.get("atari") or {}).get("frame_skip", 1))
    return 1.0


def series(rows: list[dict], x_key: str, y_key: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r[x_key] * scale, r[y_key]) for r in rows if r.get(y_key) is not None and r.get(x_key) is not None]
    if not pts:
        return np.zeros(0), np.zeros(0)
    xs, ys = zip(*pts, strict=True)
    return np.asarray(xs, float), np.asarray(ys, float)


def label_of(run: Path, cfg: dict) -> str:
    return f"{run.name} (seed {cfg.get('seed', '?')})"


def plot(runs: list[Path], out: Path, x: str = "steps", mean: bool = False, title: str | None = None) -> Path:
    """Draw the panels of `runs` into `out`; returns `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, x_label = X_AXES[x]
    loaded = [(run, run_config(run), load_rows(run)) for run in runs]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    for ax, (name, keys) in zip(axes.flat, PANELS, strict=True):
        for key in keys:
            curves = [(run, cfg, *series(rows, x_key, key, x_scale(x, cfg))) for run, cfg, rows in loaded]
            curves = [c for c in curves if c[2].size]
            if not curves:
                continue
            short = NAMES.get(key, key.split("/")[-1])
            if mean and len(curves) > 1:
                _mean_and_spread(ax, [(c[2], c[3]) for c in curves], f"{short}: mean of {len(curves)} runs")
                continue
            for run, cfg, xs, ys in curves:
                label = f"{short}: {label_of(run, cfg)}" if len(keys) > 1 else label_of(run, cfg)
                line = ax.plot(xs, ys, marker="o" if xs.size < 3 else None, label=label)
                if key == "charts/mean_return_100":
                    lo = series(_rows_of(loaded, run), x_key, "charts/min_return_100", x_scale(x, cfg))
                    hi = series(_rows_of(loaded, run), x_key, "charts/max_return_100", x_scale(x, cfg))
                    if lo[0].size == hi[0].size == xs.size:
                        ax.fill_between(xs, lo[1], hi[1], color=line[0].get_color(), alpha=0.12)
        targets = {(cfg.get("train") or {}).get("target_return") for _, cfg, _ in loaded}
        if name == "return" and len(targets) == 1 and None not in targets:
            ax.axhline(targets.pop(), color="gray", linestyle=":", label="target")
        ax.set(title=name, xlabel=x_label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    env_ids = sorted({str((cfg.get("env") or {}).get("id", "?")) for _, cfg, _ in loaded})
    fig.suptitle(title or ", ".join(env_ids))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _rows_of(loaded: list, run: Path) -> list[dict]:
    return next(rows for r, _, rows in loaded if r == run)


def _mean_and_spread(ax, curves: list[tuple[np.ndarray, np.ndarray]], label: str) -> None:
    """The runs' mean with a min-max band, on the x values all of them reach (interpolated)."""
    end = min(xs[-1] for xs, _ in curves)
    grid = np.linspace(max(xs[0] for xs, _ in curves), end, 200)
    values = np.stack([np.interp(grid, xs, ys) for xs, ys in curves])
    line = ax.plot(grid, values.mean(0), label=label)
    ax.fill_between(grid, values.min(0), values.max(0), color=line[0].get_color(), alpha=0.15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or multirun directories")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    parser.add_argument("--x", choices=tuple(X_AXES), default="steps", help="x-axis (frames: Atari env frames)")
    parser.add_argument("--mean", action="store_true", help="one mean curve with its spread instead of one per run")
    parser.add_argument("--title", default=None, help="figure title (default: the env ids)")
    args = parser.parse_args(argv)
    try:
        out = plot(run_dirs(args.runs), args.out, args.x, args.mean, args.title)
    except (PlotError, OSError, json.JSONDecodeError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"{PROG}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
