"""Time to a return threshold, launch to exit: distributed_a3c against Stable-Baselines3 A2C, interleaved.

    python scripts/bench_sb3.py                           # seed 1: ours, then SB3, to mean-100 >= 475
    python scripts/bench_sb3.py --seeds 5                 # 5 seeds, the order alternating per seed; medians
    python scripts/bench_sb3.py --seeds 3 workers=4       # Hydra overrides for our jobs

SB3 runs A2C with the RL-Zoo CartPole-v1 hyperparameters and needs `pip install -e .[bench]`. Both are
timed as whole processes, imports included. This module imports only the standard library at the top so
that the SB3 child starts as cheaply as `python -m distributed_a3c.train` does.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (  # scripts/ is on sys.path
    emit,
    fmt,
    meta,
    print_tables,
    run_child,
    run_train,
    say,
    steady_state,
    with_overrides,
    write_json,
)

PROG = "bench_sb3"
SCRIPT = Path(__file__).resolve()
# RL-Zoo (rl-baselines3-zoo hyperparams/a2c.yml) CartPole-v1: n_envs 8, MlpPolicy, ent_coef 0.0; rest SB3 defaults.
SB3_ZOO = {"n_envs": 8, "policy": "MlpPolicy", "ent_coef": 0.0}


# ----- the SB3 child ---------------------------------------------------------------------------------------
def child_sb3(env_id: str, seed: int, threshold: float, max_steps: int, max_minutes: float, threads: int | None):
    """SB3 A2C with the RL-Zoo CartPole-v1 hyperparameters until mean-100 >= threshold (or a cap)."""
    import numpy as np
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    if threads:
        torch.set_num_threads(threads)

    class StopAtThreshold(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.reached = False
            self.deadline = time.monotonic() + 60 * max_minutes

        def _on_step(self) -> bool:
            buf = self.model.ep_info_buffer
            if (
                buf is not None
                and len(buf) >= 100
                and float(np.mean([ep["r"] for ep in list(buf)[-100:]])) >= threshold
            ):
                self.reached = True
                return False
            return time.monotonic() < self.deadline

    env = make_vec_env(env_id, n_envs=SB3_ZOO["n_envs"], seed=seed)
    model = A2C(SB3_ZOO["policy"], env, ent_coef=SB3_ZOO["ent_coef"], seed=seed, device="cpu", verbose=0)
    cb = StopAtThreshold()
    t0 = time.perf_counter()
    model.learn(total_timesteps=max_steps, callback=cb)
    learn_s = time.perf_counter() - t0
    rets = [ep["r"] for ep in model.ep_info_buffer]
    emit(
        {
            "reached": cb.reached,
            "env_steps": int(model.num_timesteps),
            "learn_s": learn_s,
            "steps_per_s": model.num_timesteps / learn_s,
            "mean_return_100": float(np.mean(rets)) if rets else None,
            "torch_threads": torch.get_num_threads(),
            "hyperparameters": {**SB3_ZOO, "env_id": env_id, "device": "cpu"},
        }
    )


# ----- the benchmark --------------------------------------------------------------------------------------
def time_to_threshold(args: argparse.Namespace, overrides: list[str], run_root: Path) -> dict[str, Any]:
    """Ours and SB3 to mean-100 >= threshold, `--seeds` times, interleaved (the order alternates per seed)."""
    runs: list[dict[str, Any]] = []
    timeout = 60 * args.threshold_max_minutes + 180
    for i in range(args.seeds):
        seed = args.seed + i
        order = ("ours", "sb3") if i % 2 == 0 else ("sb3", "ours")
        for impl in order:
            say(PROG, f"time to {args.threshold:g}: {impl}, seed {seed} ...")
            runs.append(_threshold_run(impl, seed, args, overrides, run_root, timeout))
    out: dict[str, Any] = {"target_return": args.threshold, "seeds": args.seeds, "runs": runs, "median": {}}
    out["sb3_hyperparameters"] = {
        **SB3_ZOO,
        "env_id": args.sb3_env,
        "rest": "SB3 A2C defaults: RMSprop lr 7e-4, n_steps 5, gamma 0.99, gae_lambda 1, max_grad_norm 0.5",
        "device": "cpu",
        "torch_threads": args.sb3_threads or "torch default",
    }
    for impl in ("ours", "sb3"):
        mine = [r for r in runs if r["impl"] == impl]
        reached = [r for r in mine if r["reached"]]
        out["median"][impl] = {
            "reached": f"{len(reached)}/{len(mine)}",
            # A run that missed the target counts at its cap: the median then stays an honest lower bound.
            "wall_s": statistics.median(r["launch_to_exit_s"] for r in mine),
            "env_steps": statistics.median(r["env_steps"] for r in mine),
            "steps_per_s": statistics.median(r["steps_per_s"] for r in mine),
        }
    return out


def _threshold_run(
    impl: str, seed: int, args: argparse.Namespace, overrides: list[str], run_root: Path, timeout: float
) -> dict[str, Any]:
    if impl == "sb3":
        r = run_child(
            SCRIPT,
            "sb3",
            [
                "--seed",
                str(seed),
                "--threshold",
                str(args.threshold),
                "--sb3-env",
                args.sb3_env,
                "--threshold-max-steps",
                str(args.threshold_max_steps),
                "--threshold-max-minutes",
                str(args.threshold_max_minutes),
                "--sb3-threads",
                str(args.sb3_threads),
            ],
            timeout,
        )
        return {"impl": "sb3", "seed": seed, **r}
    values = {
        "seed": seed,
        "train.target_return": args.threshold,
        "train.total_env_steps": args.threshold_max_steps,
        "train.max_minutes": args.threshold_max_minutes,
    }
    r = run_train(with_overrides(overrides, values), run_root / f"threshold_seed{seed}", timeout)
    s = r["summary"]
    workers = len(s.get("pushes_per_rank", {}))
    try:  # steady state, as SB3's rate excludes its start-up
        steps_per_s = steady_state(r["rows"], s, max(workers, 1))["steps_per_s"]
    except RuntimeError:
        steps_per_s = s["env_steps"] / max(s["wall_time_s"], 1e-9)
    return {
        "impl": "ours",
        "seed": seed,
        "reached": s["exit_reason"] == "target_return",
        "env_steps": s["env_steps"],
        "steps_per_s": steps_per_s,
        "mean_return_100": s["mean_return_100"],
        "launch_to_exit_s": r["launch_to_exit_s"],
        "workers": workers,
    }


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Ours against SB3, from this one run's medians."""
    ours, sb3 = results["threshold"]["median"]["ours"], results["threshold"]["median"]["sb3"]
    return {
        "sb3_wall_over_ours_wall": sb3["wall_s"] / ours["wall_s"],
        "ours_steps_per_s_over_sb3": ours["steps_per_s"] / sb3["steps_per_s"],
        "ours_env_steps_over_sb3": ours["env_steps"] / sb3["env_steps"],
    }


# ----- output ----------------------------------------------------------------------------------------------
def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    th = results["threshold"]
    if th:
        head = ["impl", "seed", f"launch-to-exit s to {th['target_return']:g}", "env steps", "steps/s", "reached"]
        body = [
            [
                r["impl"],
                str(r["seed"]),
                fmt(r["launch_to_exit_s"], ".1f"),
                str(r["env_steps"]),
                fmt(r["steps_per_s"]),
                str(r["reached"]),
            ]
            for r in th["runs"]
        ]
        for impl, m in th["median"].items():
            body.append(
                [
                    f"{impl} median",
                    "-",
                    fmt(m["wall_s"], ".1f"),
                    fmt(m["env_steps"]),
                    fmt(m["steps_per_s"]),
                    m["reached"],
                ]
            )
        out.append(("time to threshold", head, body))
    if results.get("ratios"):
        out.append(
            ("ratios (this run)", ["ratio", "value"], [[k, fmt(v, ".3f")] for k, v in results["ratios"].items()])
        )
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides for our jobs, as for a3c-train")
    p.add_argument("--seeds", type=int, default=1, help="repeat the comparison N times (default 1)")
    p.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--threshold", type=float, default=475.0, help="target mean-100 return (default 475)")
    p.add_argument("--threshold-max-minutes", type=float, default=10.0, help="cap per run (default 10)")
    p.add_argument("--threshold-max-steps", type=int, default=2_000_000, help="env-step cap per run")
    p.add_argument("--sb3-env", default="CartPole-v1", help="env id for SB3 (its hyperparameters are CartPole's)")
    p.add_argument(
        "--sb3-threads",
        type=int,
        default=1,
        help="torch threads for SB3 (default 1, as each of our workers; 0 keeps torch's default, which"
        " collapses on a busy machine)",
    )
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    p.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories under this folder")
    p.add_argument("--child", choices=["sb3"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if args.child == "sb3":
        child_sb3(
            args.sb3_env,
            args.seed,
            args.threshold,
            args.threshold_max_steps,
            args.threshold_max_minutes,
            args.sb3_threads,
        )
        return 0
    # SIGTERM unwinds like Ctrl-C, so the child process groups (own sessions) are killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.seeds < 1:
        parser().error("--seeds must be >= 1")
    if importlib.util.find_spec("stable_baselines3") is None:
        parser().error("needs stable-baselines3: pip install -e '.[bench]'")
    overrides = list(args.overrides)
    results: dict[str, Any] = {"meta": meta(overrides, f"to mean-100 >= {args.threshold:g}")}
    run_root = args.keep_runs or Path(tempfile.mkdtemp(prefix="a3c-bench-"))
    run_root.mkdir(parents=True, exist_ok=True)
    try:
        results["threshold"] = time_to_threshold(args, overrides, run_root)
    finally:
        if args.keep_runs is None:
            shutil.rmtree(run_root, ignore_errors=True)
    results["ratios"] = ratios(results)
    print_tables(tables(results), args.plain)
    if args.out:
        write_json(args.out, results)
        say(PROG, f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
