"""The four modes side by side, in one run on this machine (each job a real `a3c-train`, 2 workers):

- CartPole-v1, the default job, to mean-100 >= 475: launch-to-exit time (median of the seeds), env steps,
  env steps/s, the server's busy fraction and the tensor bytes on the wire per env step;
- Pong (`+experiment=pong`) for a fixed budget: agent steps/s and env frames/s (x frame_skip 4).

Seeds and modes are interleaved (seed 1 in every mode, then seed 2, ...) so that the machine's drift
falls on every mode alike.

    .venv/bin/python scripts/bench_modes.py                    # 3 CartPole seeds, 2 minutes of Pong per mode
    .venv/bin/python scripts/bench_modes.py --pong-minutes 0   # CartPole only
    .venv/bin/python scripts/bench_modes.py --seeds 1,2,3,4,5 --modes grad,data

Writes docs/bench_modes.json and docs/modes.png (with --out-dir elsewhere).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import finite_json, fmt, int_list, kill_group, print_tables, tail

ROOT = Path(__file__).resolve().parents[1]
A3C_TRAIN = Path(sys.executable).with_name("a3c-train")
MODES = ["grad", "data", "sync", "central"]
FRAME_SKIP = 4


def run_job(args: list[str], timeout_s: float) -> dict:
    """One a3c-train job from launch to exit: its summary.json plus the launch-to-exit seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-modes-") as run_dir:
        cmd = [str(A3C_TRAIN), *args, "logger=quiet", f"hydra.run.dir={run_dir}"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise SystemExit(f"timed out after {timeout_s} s: {' '.join(cmd)}") from None
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"exit {proc.returncode}: {' '.join(cmd)}\n{tail(out)}")
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    summary["launch_to_exit_s"] = elapsed
    return summary


def measured(summary: dict) -> dict:
    steps, wall = summary["env_steps"], summary["wall_time_s"]
    return {
        "launch_to_exit_s": round(summary["launch_to_exit_s"], 2),
        "env_steps": steps,
        "reached": summary["exit_reason"] == "target_return",
        "env_steps_per_s": round(steps / wall, 1),
        "server_busy_fraction": summary["server_busy_fraction"],
        "wire_bytes_per_env_step": summary["wire_bytes_per_env_step"],
        "policy_lag_mean": summary.get("policy_lag", {}).get("mean"),
        "staleness_mean": summary.get("staleness", {}).get("mean"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int_list, default=[1, 2, 3])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--pong-minutes", type=float, default=2.0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--plain", action="store_true", help="plain text tables instead of rich")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"--modes {','.join(unknown)} is invalid: must be among {', '.join(MODES)}")

    cartpole: dict[str, list[dict]] = {m: [] for m in modes}
    for seed in args.seeds:
        for mode in modes:
            row = measured(run_job([f"mode={mode}", f"seed={seed}", "train.max_minutes=3"], timeout_s=300))
            cartpole[mode].append({"seed": seed, **row})
            print(f"cartpole mode={mode} seed={seed}: {row}", flush=True)
    pong: dict[str, dict] = {}
    if args.pong_minutes > 0:
        for mode in modes:
            budget = [f"train.max_minutes={args.pong_minutes}", "train.target_return=null"]
            summary = run_job(["+experiment=pong", f"mode={mode}", *budget], timeout_s=60 * args.pong_minutes + 180)
            row = measured(summary)
            row["frames_per_s"] = round(row["env_steps_per_s"] * FRAME_SKIP, 1)
            row["mean_return_100"] = summary["mean_return_100"]
            pong[mode] = row
            print(f"pong mode={mode}: {row}", flush=True)

    result = {"command": " ".join(["scripts/bench_modes.py", *sys.argv[1:]]), "cartpole": cartpole, "pong": pong}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "bench_modes.json").write_text(json.dumps(finite_json(result), indent=2) + "\n")
    tables = [cartpole_table(cartpole)] + ([pong_table(pong)] if pong else [])
    print_tables(tables, args.plain)
    plot(cartpole, pong, args.out_dir / "modes.png")


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else None


def cartpole_table(cartpole: dict[str, list[dict]]):
    head = ["mode", "solved", "launch-to-exit s", "env steps", "env steps/s", "server busy", "bytes/env step"]
    body = []
    for mode, rows in cartpole.items():
        body.append(
            [
                mode,
                f"{sum(r['reached'] for r in rows)}/{len(rows)}",
                fmt(_median(rows, "launch_to_exit_s"), ".1f"),
                fmt(_median(rows, "env_steps"), ".0f"),
                fmt(_median(rows, "env_steps_per_s"), ".0f"),
                fmt(_median(rows, "server_busy_fraction"), ".2f"),
                fmt(_median(rows, "wire_bytes_per_env_step"), ".0f"),
            ]
        )
    return "CartPole-v1 to mean-100 >= 475 (medians over seeds)", head, body


def pong_table(pong: dict[str, dict]):
    head = ["mode", "agent steps/s", "frames/s", "server busy", "bytes/env step", "mean-100 return"]
    body = [
        [
            mode,
            fmt(r["env_steps_per_s"], ".0f"),
            fmt(r["frames_per_s"], ".0f"),
            fmt(r["server_busy_fraction"], ".2f"),
            fmt(r["wire_bytes_per_env_step"], ".0f"),
            fmt(r["mean_return_100"], ".1f"),
        ]
        for mode, r in pong.items()
    ]
    return "Pong (+experiment=pong), fixed wall-time budget", head, body


def plot(cartpole: dict[str, list[dict]], pong: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if pong else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6))
    modes = list(cartpole)
    for ax, key, label in ((axes[0], "launch_to_exit_s", "launch to exit, s"), (axes[1], "env_steps", "env steps")):
        for i, mode in enumerate(modes):
            values = [r[key] for r in cartpole[mode]]
            ax.scatter([i] * len(values), values, color="C0", alpha=0.6)
            ax.hlines(statistics.median(values), i - 0.3, i + 0.3, color="C3")
        ax.set_xticks(range(len(modes)), modes)
        ax.set_title(f"CartPole to 475: {label}")
        ax.set_ylim(bottom=0)
    if pong:
        axes[2].bar(list(pong), [r["frames_per_s"] for r in pong.values()], color="C2")
        axes[2].set_title("Pong: env frames/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
