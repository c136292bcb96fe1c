"""mode=sync replayed in one process (trainer.run_serial, deterministic for a seed): the env steps until the
evaluated CartPole return reaches 475, for each shape of a worker's push at a worker count. Every shape
steps at the rate the square-root rule gives its step (optim.lr is meant for 640 env steps), with
scale.sync_env_steps off so that the shape is taken as given.

    .venv/bin/python scripts/bench_sync_shape.py --seeds 1,2,3 --out /tmp/shapes.json
    .venv/bin/python scripts/bench_sync_shape.py --shapes "fewer_envs=16x20x8,whole=16x20x32"

A shape is LABEL=WORKERSxROLLOUTxENVS. The defaults compare, at 16 and 32 workers, what
scale.sync_env_steps does now (fewer envs, 20-step rollouts), shorter rollouts with the envs kept, and the
whole push, with 2 workers' whole pushes as the base. The runs are printed as JSON lines, as measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import int_list, meta, print_tables
from omegaconf import OmegaConf

DEFAULT_SHAPES = (
    "base=2x20x32,fewer_envs=16x20x8,shorter_rollouts=16x5x32,whole=16x20x32,"
    "fewer_envs=32x20x4,shorter_rollouts=32x5x16,whole=32x20x32"
)


def run_one(workers: int, rollout_len: int, envs: int, seed: int, max_steps: int) -> dict:
    from distributed_a3c.config import Config, validate
    from distributed_a3c.trainer import run_serial

    cfg = validate(Config(mode="sync", seed=seed))
    cfg.worker.rollout_len, cfg.worker.envs_per_worker = rollout_len, envs
    cfg.scale.sync_env_steps, cfg.scale.reference_batch = None, 640
    cfg.logger.wandb.mode, cfg.logger.progress = "disabled", False
    cfg.train.max_minutes, cfg.train.total_env_steps = 4, max_steps
    cfg.eval.interval_env_steps, cfg.train.target_source = 10_000, "eval"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="a3c-sync-shape-") as run_dir:
        summary = run_serial(cfg, Path(run_dir), OmegaConf.to_container(OmegaConf.structured(cfg)), workers=workers)
    return {
        "solved": summary["exit_reason"] == "target_return",
        "env_steps": summary["env_steps"],
        "steps": summary["weight_version"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int_list, default=list(range(1, 11)), help="seeds (default 1-10)")
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="LABEL=WORKERSxROLLOUTxENVS, comma-separated")
    p.add_argument("--max-steps", type=int, default=1_500_000, help="env-step budget of a run")
    p.add_argument("--out", type=Path, help="write the runs and medians as JSON here")
    p.add_argument("--plain", action="store_true", help="plain-text table instead of rich")
    args = p.parse_args()
    shapes = []
    for text in args.shapes.split(","):
        label, _, dims = text.partition("=")
        try:
            workers, rollout_len, envs = (int(d) for d in dims.split("x"))
        except ValueError:
            p.error(f"--shapes {text!r}: must be LABEL=WORKERSxROLLOUTxENVS, e.g. whole=16x20x32")
        shapes.append((label, workers, rollout_len, envs))
    runs = []
    for seed in args.seeds:
        for label, workers, rollout_len, envs in shapes:
            run = {"label": label, "workers": workers, "rollout_len": rollout_len, "envs": envs, "seed": seed}
            run.update(run_one(workers, rollout_len, envs, seed, args.max_steps))
            print(json.dumps(run), flush=True)
            runs.append(run)
    body = []
    for label, workers, rollout_len, envs in shapes:
        mine = [r for r in runs if (r["label"], r["workers"]) == (label, workers)]
        steps = sorted(r["env_steps"] for r in mine)
        body.append(
            [label, str(workers), f"{envs} x {rollout_len}", str(workers * envs * rollout_len)]
            + [f"{sum(r['solved'] for r in mine)}/{len(mine)}", f"{statistics.median(steps):.0f}"]
            + [", ".join(f"{s // 1000}k" for s in steps)]
        )
    head = ["shape", "workers", "envs x steps", "step env steps", "solved", "median env steps", "env steps"]
    print_tables([("mode=sync, serial replay: env steps to an evaluated 475", head, body)], args.plain)
    if args.out:
        args.out.write_text(json.dumps({"meta": meta([], "to 475"), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
