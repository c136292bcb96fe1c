"""Throughput of distributed_a3c on one machine, every ratio taken from one run.

    python scripts/bench_throughput.py                          # raw env, in-process, 1/2/4 workers; 10 s each
    python scripts/bench_throughput.py --seconds 30 --workers 1,2,4,8 --out results.json --plot docs/scaling.png
    python scripts/bench_throughput.py --steps 200000           # a step budget instead of a time budget
    python scripts/bench_throughput.py worker.envs_per_worker=32 optim=rmsprop   # Hydra overrides for every job

What it measures, each in a fresh process so that no job inherits another's memory or warm caches:
  raw_env      the worker's vector env (same env, envs_per_worker) stepped with random actions: the ceiling
  in_process   one Worker against the in-process ParameterServer (no RPC), the algorithm's own cost
  workers=N    `a3c-train` (1 server + N workers over loopback RPC), read back from metrics.jsonl/summary.json

Rates are steady-state: from the first metric row with env steps (start-up excluded) to the last periodic row.
The time split (env stepping / acting / loss+backward / waiting on the server) is the push-weighted mean of
the rows' worker/* keys. Time to a return threshold, against Stable-Baselines3, is bench_sb3.py's.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (  # scripts/ is on sys.path
    SPLIT_KEYS,
    compose,
    emit,
    fmt,
    int_list,
    meta,
    print_tables,
    run_child,
    run_train,
    save_figure,
    say,
    steady_state,
    with_overrides,
    write_json,
)

PROG = "bench_throughput"
SCRIPT = Path(__file__).resolve()


# ----- child processes: one measurement each, one JSON line on stdout ------------------------------------
def child_raw_env(overrides: list[str], seconds: float | None, steps: int | None) -> None:
    """Step the worker's vector env with pre-sampled random actions: what a worker could reach at best."""
    from distributed_a3c.envs import make_vector_env
    from distributed_a3c.worker.gradient import peak_rss_mb, worker_seed

    cfg = compose(overrides)
    n = cfg.worker.envs_per_worker
    envs = make_vector_env(cfg.env, n, worker_seed(cfg.seed, 1))
    actions = [envs.action_space.sample() for _ in range(256)]
    for i in range(20):  # warm-up
        envs.step(actions[i])
    done, i = 0, 0
    t0 = time.perf_counter()
    deadline = t0 + seconds if seconds is not None else math.inf
    limit = steps if steps is not None else math.inf
    while done < limit and time.perf_counter() < deadline:
        envs.step(actions[i % len(actions)])
        done += n
        i += 1
    dt = time.perf_counter() - t0
    envs.close()
    emit(
        {
            "env_id": cfg.env.id,
            "envs_per_worker": n,
            "vectorization": cfg.env.vectorization,
            "env_steps": done,
            "seconds": dt,
            "steps_per_s": done / dt,
            "peak_rss_mb_by_rank": {"0": peak_rss_mb()},
        }
    )


def child_in_process(overrides: list[str], log_interval_s: float) -> None:
    """One worker against the in-process parameter server (trainer.run_serial): a run's code path, minus RPC."""
    import json
    import tempfile
    from pathlib import Path

    from omegaconf import OmegaConf

    from distributed_a3c.trainer import run_serial
    from distributed_a3c.worker import peak_rss_mb

    cfg = compose([*overrides, "logger=quiet", f"train.log_interval_s={log_interval_s}"])
    with tempfile.TemporaryDirectory(prefix="a3c-bench-serial-") as run_dir:
        summary = run_serial(cfg, Path(run_dir), OmegaConf.to_container(OmegaConf.structured(cfg)), workers=1)
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    summary["peak_rss_mb_by_rank"] = {"0": peak_rss_mb()}
    emit({"summary": summary, "rows": rows})


# ----- the benchmark --------------------------------------------------------------------------------------
def budget_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Train until the budget, never until the target return."""
    if args.steps is not None:
        return {"train.target_return": None, "train.total_env_steps": args.steps, "train.max_minutes": None}
    return {"train.target_return": None, "train.total_env_steps": 10**12, "train.max_minutes": args.seconds / 60}


def throughput(args: argparse.Namespace, overrides: list[str], run_root: Path) -> dict[str, Any]:
    budget = budget_overrides(args)
    common = {**budget, "train.log_interval_s": args.log_interval}
    timeout = args.timeout
    out: dict[str, Any] = {}

    say(PROG, "raw env (random actions) ...")
    budget_args = ["--steps", str(args.steps)] if args.steps is not None else ["--seconds", str(args.seconds)]
    out["raw_env"] = run_child(SCRIPT, "raw", [*budget_args, *overrides], timeout)

    say(PROG, "in-process worker + server (no RPC) ...")
    r = run_child(
        SCRIPT, "inprocess", ["--log-interval", str(args.log_interval), *with_overrides(overrides, common)], timeout
    )
    out["in_process"] = {**steady_state(r["rows"], r["summary"], 1), "launch_to_exit_s": r["launch_to_exit_s"]}

    out["distributed"] = {}
    for n in args.workers:
        say(PROG, f"a3c-train workers={n} ...")
        r = run_train(with_overrides(overrides, {**common, "workers": n}), run_root / f"workers{n}", timeout)
        out["distributed"][str(n)] = {
            **steady_state(r["rows"], r["summary"], n),
            "launch_to_exit_s": r["launch_to_exit_s"],
        }
    return out


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Every ratio from this one run: ours vs the raw env rate, N workers vs the fewest."""
    out: dict[str, float] = {}
    t = results["throughput"]
    raw = t["raw_env"]["steps_per_s"]
    inproc = t["in_process"]["steps_per_s"]
    out["in_process_vs_raw_env"] = inproc / raw
    dist = t["distributed"]
    if dist:
        base_n = min(int(n) for n in dist)
        base = dist[str(base_n)]["steps_per_s"]
        out[f"workers{base_n}_vs_in_process"] = base / inproc
        for n, d in dist.items():
            out[f"workers{n}_vs_raw_env"] = d["steps_per_s"] / raw
            out[f"workers{n}_per_worker_vs_raw_env"] = d["steps_per_s_per_worker"] / raw
            if int(n) != base_n:
                out[f"workers{n}_vs_workers{base_n}"] = d["steps_per_s"] / base
                out[f"workers{n}_scaling_efficiency"] = d["steps_per_s"] / base / (int(n) / base_n)
    return out


# ----- output ----------------------------------------------------------------------------------------------
def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    t = results["throughput"]
    if t:
        head = ["job", "env steps/s", "pushes/s", "env/act/learn/wait %", "server busy", "stale mean/p99", "dropped"]
        head += ["RSS MiB srv/wkr", "vs raw env", "vs fewest"]
        raw = t["raw_env"]
        body = [
            [
                f"raw env x{raw['envs_per_worker']}",
                fmt(raw["steps_per_s"]),
                "-",
                "-",
                "-",
                "-",
                "-",
                f"{fmt(raw['peak_rss_mb_by_rank']['0'])}",
                "1.00",
                "-",
            ]
        ]
        r = results["ratios"]
        jobs = [("in-process", t["in_process"], r.get("in_process_vs_raw_env"), None)]
        base_n = min((int(n) for n in t["distributed"]), default=None)
        for n, d in t["distributed"].items():
            jobs.append((f"workers={n}", d, r.get(f"workers{n}_vs_raw_env"), r.get(f"workers{n}_vs_workers{base_n}")))
        for name, d, vs_raw, vs_base in jobs:
            split = d["time_split"]
            body.append(
                [
                    name,
                    fmt(d["steps_per_s"]),
                    fmt(d["pushes_per_s"]),
                    "/".join(fmt(100 * split[k]) for k in SPLIT_KEYS) if split else "-",
                    fmt(d["server_busy_fraction"], ".2f"),
                    f"{fmt(d['staleness_mean'], '.1f')}/{fmt(d['staleness_p99'])}",
                    str(d["dropped_pushes"]),
                    f"{fmt(d['peak_rss_mb_server'])}/{fmt(d['peak_rss_mb_worker_max'])}",
                    fmt(vs_raw, ".2f"),
                    fmt(vs_base, ".2f") if vs_base is not None else "-",
                ]
            )
        out.append(("throughput (steady state)", head, body))
    if results.get("ratios"):
        out.append(
            ("ratios (this run)", ["ratio", "value"], [[k, fmt(v, ".3f")] for k, v in results["ratios"].items()])
        )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = results["throughput"]
    dist = t["distributed"]
    ns = sorted(int(n) for n in dist)
    sps = [dist[str(n)]["steps_per_s"] for n in ns]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(ns, sps, "o-", label="a3c-train")
    ax.plot(ns, [sps[0] * n / ns[0] for n in ns], "--", color="grey", label=f"linear from {ns[0]} worker(s)")
    ax.axhline(t["in_process"]["steps_per_s"], color="tab:green", ls=":", label="in-process (no RPC)")
    ax.axhline(t["raw_env"]["steps_per_s"], color="tab:red", ls=":", label="raw env, 1 process")
    ax.set(xlabel="workers", ylabel="env steps/s", xticks=ns, title="throughput")
    ax.legend(fontsize=8)
    labels = ["in-proc", *[str(n) for n in ns]]
    splits = [t["in_process"]["time_split"], *[dist[str(n)]["time_split"] for n in ns]]
    bottom = [0.0] * len(labels)
    for k in SPLIT_KEYS:
        vals = [s.get(k, 0.0) for s in splits]
        ax2.bar(labels, vals, bottom=bottom, label=k)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax2.set(xlabel="workers", ylabel="fraction of worker time", title="worker time split")
    ax2.legend(fontsize=8)
    meta = results["meta"]
    fig.suptitle(
        f"{meta['env_id']} | {meta['cpu_count']} CPUs, load {meta['load_avg_1m_at_start']:.1f} at start | "
        f"{meta['budget']} | {meta['git_commit']}",
        fontsize=9,
    )
    save_figure(fig, path)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every job, as for a3c-train")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, default=10.0, help="time budget per job (default 10)")
    budget.add_argument("--steps", type=int, default=None, help="env-step budget per job instead")
    p.add_argument("--workers", type=int_list, default=[1, 2, 4], help="worker counts to run (default 1,2,4)")
    p.add_argument("--log-interval", type=float, default=0.5, help="seconds between metric rows (default 0.5)")
    p.add_argument("--timeout", type=float, default=None, help="kill a job after this many seconds")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write a scaling plot PNG here")
    p.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    p.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories under this folder")
    p.add_argument("--child", choices=["raw", "inprocess"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if args.child == "raw":
        child_raw_env(args.overrides, None if args.steps is not None else args.seconds, args.steps)
        return 0
    if args.child == "inprocess":
        child_in_process(args.overrides, args.log_interval)
        return 0
    # SIGTERM unwinds like Ctrl-C, so the child process groups (own sessions) are killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.timeout is None:
        args.timeout = (args.seconds + 120) if args.steps is None else 900.0
    overrides = list(args.overrides)
    budget = f"{args.steps} env steps per job" if args.steps is not None else f"{args.seconds:g} s per job"
    results: dict[str, Any] = {"meta": meta(overrides, budget)}
    run_root = args.keep_runs or Path(tempfile.mkdtemp(prefix="a3c-bench-"))
    run_root.mkdir(parents=True, exist_ok=True)
    try:
        results["throughput"] = throughput(args, overrides, run_root)
    finally:
        if args.keep_runs is None:
            shutil.rmtree(run_root, ignore_errors=True)
    results["ratios"] = ratios(results)
    print_tables(tables(results), args.plain)
    if args.out:
        write_json(args.out, results)
        say(PROG, f"wrote {args.out}")
    if args.plot and results["throughput"]["distributed"]:
        plot(results, args.plot)
        say(PROG, f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
