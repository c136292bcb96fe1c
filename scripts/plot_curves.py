"""Plot learning curves (mean return of the last 100 episodes vs env steps) from run directories.

    python scripts/plot_curves.py RUN_DIR [RUN_DIR ...] --out docs/curves/acrobot.png [--title Acrobot-v1]
    python scripts/plot_curves.py outputs/2026-11-21/* --out curves.png --x time   # wall time on the x-axis
    python scripts/plot_curves.py runs/pong_* --out pong.png --x frames      # Atari: env frames (steps x frame_skip)

Each run directory is one written by `a3c-train` (it reads `metrics.jsonl`, and `config.yaml` for the
legend: env id and seed). A horizontal line marks `train.target_return` when every run shares it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402  (PyYAML comes with Hydra/OmegaConf)

X_AXES = {
    "steps": ("global_step", "env steps (all workers)"),
    "frames": ("global_step", "env frames (env steps x frame skip)"),
    "time": ("time/wall_s", "wall time (s)"),
    "minutes": ("time/wall_s", "wall time (min)"),
}


def load_curve(run_dir: Path, x_key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        y = row.get("charts/mean_return_100")
        if y is not None:
            xs.append(row[x_key] * scale)
            ys.append(y)
    return xs, ys


def frame_skip(cfg: dict) -> int:
    """Emulator frames per env step: env.atari.frame_skip for ALE ids, else 1."""
    env = cfg.get("env", {})
    return int(env.get("atari", {}).get("frame_skip", 1)) if str(env.get("id", "")).startswith("ALE/") else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (each with metrics.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default=None)
    parser.add_argument("--x", choices=tuple(X_AXES), default="steps", help="x-axis (frames: Atari env frames)")
    args = parser.parse_args()
    x_key, x_label = X_AXES[args.x]

    fig, ax = plt.subplots(figsize=(7, 4.2))
    targets = set()
    env_ids = set()
    for run in args.runs:
        if not (run / "metrics.jsonl").is_file():
            raise SystemExit(f"plot_curves: error: {run} has no metrics.jsonl")
        cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        env_ids.add(cfg.get("env", {}).get("id", "?"))
        targets.add(cfg.get("train", {}).get("target_return"))
        scale = {"frames": frame_skip(cfg), "minutes": 1 / 60}.get(args.x, 1.0)
        xs, ys = load_curve(run, x_key, scale)
        ax.plot(xs, ys, label=f"{run.name} (seed {cfg.get('seed', '?')})")
    if len(targets) == 1 and None not in targets:
        ax.axhline(targets.pop(), color="gray", linestyle=":", label="target")
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean return of the last 100 episodes")
    ax.set_title(args.title or ", ".join(sorted(env_ids)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"plot_curves: wrote {args.out}")


if __name__ == "__main__":
    main()
