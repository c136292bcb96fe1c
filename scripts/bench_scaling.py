"""Sample-scaling efficiency: how much experience N workers need, against 2, measured on the policy itself.

    python scripts/bench_scaling.py                                   # grad mode, 2..64 workers, seeds 1-5
    python scripts/bench_scaling.py --modes grad,sync,data --seeds 1,2,3 --workers 2,8,16,32
    python scripts/bench_scaling.py --collapse 16,32                  # + 3M-env-step runs without a target
    python scripts/bench_scaling.py --launcher serial                 # the same in one process, replayed
    python scripts/bench_scaling.py --launcher netns --nodes 2        # two torchrun agents, two namespaces
    python scripts/bench_scaling.py env=acrobot --threshold -100      # another env family
    python scripts/bench_scaling.py --recipe "before=server.accumulate=1 scale.rule=none"   # + a recipe

Each run is `a3c-train workers=N mode=M seed=S` with the evaluation on (`eval.interval_env_steps`, 10k by
default) and the stop on it (`train.target_source=eval`): the env steps it needed are those of the first
weights whose evaluation reached the threshold, not the lag of the training episodes. Runs are interleaved
(seed by seed, the worker counts in a rotating order) so that the machine's load falls on every N alike.
`--launcher serial` replays the same job in one process (trainer.run_serial, workers pushing in turn, so
each push is N-1 versions stale as in a job of equal workers): no RPC, deterministic, and fast.
`--launcher netns` runs each job as a cluster would: a torchrun agent on each of --nodes network namespaces
joined by a bridge (scripts/_netns.py; needs root), the ranks split evenly, RPC over TCP across the links.

The sample-scaling efficiency of a recipe is E(N) = median env steps at 2 workers / median env steps at
N: the share of the ideal speed-up a user gets when each worker has cores of its own. A run that does not
reach the threshold within its budget counts at its budget (the median stays a lower bound). "per env" is
a run's env steps over its envs in flight (workers × the envs each worker steps), the median of the runs: how
many steps each env had made when the policy got there.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (
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
    with_overrides,
    write_json,
)
from _netns import netns_missing, run_train_on_nodes

from distributed_a3c.build import fit_to_workers
from distributed_a3c.train import job_ranks

PROG = "bench_scaling"
SCRIPT = Path(__file__).resolve()
Recipe = tuple[str, dict[str, str]]
"""(label, overrides by key) of one recipe: a mode, or --recipe LABEL=OVERRIDES."""


def child_serial(workers: int, overrides: list[str], fresh: bool = False, order: str = "round-robin") -> None:
    """One job replayed in this process: its summary and evaluation rows. `fresh`: every worker pulls the
    newest weights before each rollout, so no gradient is stale (an oracle to compare with, not a mode)."""
    import tempfile as tf

    from _common import compose
    from omegaconf import OmegaConf

    from distributed_a3c.trainer import run_serial
    from distributed_a3c.worker.gradient import Worker

    if fresh:
        rollout_and_push = Worker.step

        def step_from_fresh_weights(worker: Worker):
            worker.begin()
            return rollout_and_push(worker)

        Worker.step = step_from_fresh_weights

    cfg = compose([*overrides, "logger=quiet"])
    with tf.TemporaryDirectory(prefix="a3c-bench-scaling-") as run_dir:
        config_dict = OmegaConf.to_container(OmegaConf.structured(cfg))
        summary = run_serial(cfg, Path(run_dir), config_dict, workers=workers, order=order)
        rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    emit({"summary": summary, "rows": [r for r in rows if "eval/mean_return" in r]})


def run_job(args: argparse.Namespace, workers: int, values: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    overrides = [*args.overrides, f"workers={workers}", *[f"{k}={v}" for k, v in values.items()]]
    timeout = 60 * args.max_minutes + 300
    if args.launcher == "serial":
        fresh = ["--fresh"] if args.fresh else []
        order = ["--order", args.order]
        return run_child(SCRIPT, "serial", ["--workers", str(workers), *fresh, *order, *overrides], timeout)
    if args.launcher == "netns":
        quiet = with_overrides(overrides, {"logger": "quiet"})
        r = run_train_on_nodes(quiet, run_dir, job_ranks(compose(overrides)), args.nodes, timeout, args.rate_mbit)
    else:
        r = run_train(overrides, run_dir, timeout)
    r["rows"] = [row for row in r["rows"] if "eval/mean_return" in row]
    return r


def measure(args: argparse.Namespace, recipe: Recipe, workers: int, seed: int, run_dir: Path) -> dict[str, Any]:
    """One run to the threshold of the evaluated return."""
    label, extra = recipe
    values = {
        **extra,
        "seed": seed,
        "eval.interval_env_steps": args.interval,
        "eval.episodes": args.episodes,
        "train.target_source": "eval",
        "train.target_return": args.threshold,
        "train.total_env_steps": args.max_steps,
        "train.max_minutes": args.max_minutes,
    }
    envs = workers * envs_per_worker(tuple(args.overrides), tuple(extra.items()), workers)
    try:
        r = run_job(args, workers, values, run_dir)
    except Exception as e:  # a failed or hung run counts as unsolved at its budget; the benchmark goes on
        error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        say(PROG, f"  failed: {error}")
        return {
            "mode": label,
            "workers": workers,
            "envs": envs,
            "seed": seed,
            "solved": False,
            "env_steps": args.max_steps,
            "launch_to_exit_s": float("nan"),
            "wall_time_s": None,
            "staleness_mean": None,
            "staleness_p99": None,
            "staleness_max": None,
            "policy_lag_mean": None,
            "evaluations_skipped": None,
            "evaluations": [],
            "error": error,
        }
    s = r["summary"]
    at = (s.get("eval") or {}).get("first_global_step_at_target")
    return {
        "mode": label,
        "workers": workers,
        "envs": envs,
        "seed": seed,
        "solved": at is not None,
        "env_steps": at if at is not None else s["env_steps"],
        "launch_to_exit_s": r["launch_to_exit_s"],
        "wall_time_s": s["wall_time_s"],
        "staleness_mean": (s.get("staleness") or {}).get("mean"),
        "staleness_p99": (s.get("staleness") or {}).get("p99"),
        "staleness_max": (s.get("staleness") or {}).get("max"),
        "policy_lag_mean": (s.get("policy_lag") or {}).get("mean"),
        "evaluations_skipped": (s.get("eval") or {}).get("skipped"),
        "evaluations": [(row["global_step"], row["eval/mean_return"]) for row in r["rows"]],
    }


@functools.cache
def envs_per_worker(overrides: tuple[str, ...], recipe: tuple[tuple[str, str], ...], workers: int) -> int:
    """worker.envs_per_worker of a recipe's job (its overrides by key) as its ranks run it: composed as
    a3c-train does, then fitted to the worker count (mode=sync and mode=data step fewer envs with more)."""
    return fit_to_workers(compose(with_overrides(list(overrides), dict(recipe))), workers).worker.envs_per_worker


def collapse_check(args: argparse.Namespace, recipe: Recipe, workers: int, run_dir: Path) -> dict[str, Any]:
    """A long run without a target: do its last evaluations hold the solved policy, or did it collapse?"""
    label, extra = recipe
    values = {
        **extra,
        "seed": args.seeds[0],
        "eval.interval_env_steps": args.collapse_interval,
        "eval.episodes": args.episodes,
        "train.target_return": "null",
        # With the stop on the evaluated return the lead plays the weights still queued at the budget: with
        # many workers on few cores training outruns the evaluations, and the last ones are what count here.
        "train.target_source": "eval",
        "train.total_env_steps": args.collapse_steps,
        "train.max_minutes": args.max_minutes,
    }
    r = run_job(args, workers, values, run_dir)
    evals = [(row["global_step"], row["eval/mean_return"]) for row in r["rows"]]
    last = [mean for _, mean in evals[-5:]]
    return {
        "mode": label,
        "workers": workers,
        "env_steps": r["summary"]["env_steps"],
        "evaluations": evals,
        "last5_mean": statistics.fmean(last) if last else None,
        "last5_min": min(last) if last else None,
        "held": bool(last) and min(last) >= 0.8 * args.threshold,
    }


def summarize(runs: list[dict[str, Any]], pool_base: bool = False) -> dict[str, dict[str, Any]]:
    """Per mode and worker count: median env steps, E(N) against 2 workers, runs solved, median wall time.
    `pool_base`: the recipes run the same job at 2 workers, so E(N) divides by the median of all their
    2-worker runs (more seeds for the one figure every ratio shares)."""
    out: dict[str, dict[str, Any]] = {}
    for mode in sorted({r["mode"] for r in runs}):
        mine = [r for r in runs if r["mode"] == mode]
        per_n = {}
        for n in sorted({r["workers"] for r in mine}):
            rs = [r for r in mine if r["workers"] == n]
            per_env = [r["env_steps"] / r["envs"] for r in rs if r.get("envs")]  # runs saved before it was kept
            per_n[n] = {
                "median_env_steps": statistics.median(r["env_steps"] for r in rs),
                "median_env_steps_per_env": statistics.median(per_env) if per_env else None,
                "solved": f"{sum(r['solved'] for r in rs)}/{len(rs)}",
                "median_launch_to_exit_s": _median([r.get("launch_to_exit_s") for r in rs]),
                "staleness_mean": _median([r.get("staleness_mean") for r in rs]),
                "env_steps": sorted(r["env_steps"] for r in rs),
            }
        base = per_n.get(2, {}).get("median_env_steps")
        if pool_base:
            base = statistics.median(r["env_steps"] for r in runs if r["workers"] == 2)
        for stats in per_n.values():
            stats["efficiency"] = base / stats["median_env_steps"] if base else None
        out[mode] = {str(n): v for n, v in per_n.items()}
    return out


def _load_runs(path: Path | None) -> list[dict[str, Any]]:
    """Results measured before (a benchmark cut short and started again with the same --runs-jsonl)."""
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _saved(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Append one result to --runs-jsonl as soon as it is measured: a crash loses nothing measured."""
    if args.runs_jsonl is not None:
        with open(args.runs_jsonl, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and v == v]  # unknown, or nan for a failed run
    return statistics.median(known) if known else None


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    head = ["recipe", "workers", "solved", "median env steps", "E(N)", "per env", "staleness", "launch-to-exit s"]
    head.append("env steps")
    body = []
    for mode, per_n in results["summary"].items():
        for n, s in per_n.items():
            steps = ", ".join(f"{x / 1000:.0f}k" for x in s["env_steps"])
            body.append(
                [
                    mode,
                    n,
                    s["solved"],
                    fmt(s["median_env_steps"]),
                    fmt(s["efficiency"], ".2f"),
                    fmt(s.get("median_env_steps_per_env")),
                    fmt(s["staleness_mean"], ".1f"),
                    fmt(s["median_launch_to_exit_s"], ".1f"),
                    steps,
                ]
            )
    out = [(f"env steps to an evaluated return of {results['meta']['threshold']:g}", head, body)]
    if results.get("collapse"):
        head = ["recipe", "workers", "env steps", "last 5 evaluations: mean", "min", "held"]
        body = [
            [
                c["mode"],
                str(c["workers"]),
                fmt(c["env_steps"]),
                fmt(c["last5_mean"], ".1f"),
                fmt(c["last5_min"], ".1f"),
                str(c["held"]),
            ]
            for c in results["collapse"]
        ]
        out.append(("long runs without a target (collapse check)", head, body))
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, per_n in results["summary"].items():
        ns = sorted(int(n) for n in per_n)
        ax.plot(ns, [per_n[str(n)]["efficiency"] for n in ns], "o-", label=mode)
    ax.axhline(1.0, color="grey", ls="--", lw=0.8, label="ideal")
    top = max([1.3] + [s["efficiency"] + 0.1 for per_n in results["summary"].values() for s in per_n.values()])
    ax.set(xscale="log", xlabel="workers", ylabel="E(N) = env steps at 2 / at N", ylim=(0, top))
    ns = sorted({int(n) for per_n in results["summary"].values() for n in per_n})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    m = results["meta"]
    ax.set_title(f"sample-scaling efficiency, {m['env_id']} to {m['threshold']:g} ({m['launcher']})", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run, as for a3c-train")
    p.add_argument("--workers", type=int_list, default=[2, 4, 8, 16, 32, 64], help="worker counts (need 2)")
    p.add_argument("--seeds", type=int_list, default=[1, 2, 3, 4, 5], help="seeds (default 1-5)")
    p.add_argument("--modes", default="grad", help="comma-separated modes (default grad)")
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        help='another recipe to compare, "LABEL=key=value key=value" (repeatable)',
    )
    p.add_argument(
        "--launcher",
        choices=["process", "serial", "netns"],
        default="process",
        help="a3c-train, run_serial, or a torchrun agent on each of --nodes network namespaces",
    )
    p.add_argument("--nodes", type=int, default=2, help="with --launcher netns: namespaces, one agent each")
    p.add_argument("--rate-mbit", type=float, default=None, help="with --launcher netns: each link's tbf rate")
    p.add_argument("--threshold", type=float, default=475.0, help="evaluated mean return to reach (default 475)")
    p.add_argument("--interval", type=int, default=10_000, help="eval.interval_env_steps (default 10000)")
    p.add_argument("--episodes", type=int, default=10, help="eval.episodes (default 10)")
    p.add_argument("--max-steps", type=int, default=3_000_000, help="env-step budget of a run (default 3M)")
    p.add_argument("--max-minutes", type=float, default=10.0, help="time budget of a run (default 10)")
    p.add_argument("--collapse", type=int_list, default=None, help="worker counts of long runs without a target")
    p.add_argument("--collapse-steps", type=int, default=3_000_000, help="their env steps (default 3M)")
    p.add_argument("--collapse-interval", type=int, default=50_000, help="their evaluation interval")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "--runs-jsonl",
        type=Path,
        default=None,
        help="append each result here as measured; runs found there are skipped",
    )
    p.add_argument("--plot", type=Path, default=None, help="write E(N) against N as a PNG here")
    p.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    p.add_argument("--pool-base", action="store_true", help="E(N) against the 2-worker runs of every recipe")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="with --launcher serial: every worker pulls the newest weights before each rollout (no staleness)",
    )
    p.add_argument(
        "--order",
        choices=["round-robin", "shuffled", "random"],
        default="round-robin",
        help="with --launcher serial: who pushes next (trainer.run_serial's order; default round-robin)",
    )
    p.add_argument("--child", choices=["serial"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if args.child == "serial":
        workers = next(int(o.split("=", 1)[1]) for o in args.overrides if o.startswith("workers="))
        child_serial(workers, [o for o in args.overrides if not o.startswith("workers=")], args.fresh, args.order)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if (args.fresh or args.order != "round-robin") and args.launcher != "serial":
        parser().error("--fresh and --order need --launcher serial")
    if args.launcher == "netns" and (why := netns_missing(need_tc=args.rate_mbit is not None)):
        parser().error(f"--launcher netns: {why}")
    if 2 not in args.workers:
        parser().error("--workers must include 2: E(N) is measured against 2 workers")
    recipes: list[Recipe] = [(m.strip(), {"mode": m.strip()}) for m in args.modes.split(",") if m.strip()]
    for text in args.recipe:
        label, _, overrides = text.partition("=")
        if not label or not overrides:
            parser().error(f"--recipe {text!r}: must be LABEL=key=value [key=value ...]")
        recipes.append((label, dict(o.split("=", 1) for o in overrides.split())))
    results: dict[str, Any] = {"meta": meta(args.overrides, f"to {args.threshold:g} or {args.max_steps} env steps")}
    results["meta"].update(
        threshold=args.threshold,
        launcher=args.launcher,
        nodes=args.nodes if args.launcher == "netns" else 1,
        rate_mbit=args.rate_mbit if args.launcher == "netns" else None,
        fresh=args.fresh,
        order=args.order,
        interval=args.interval,
        command=sys.argv,
    )
    done = _load_runs(args.runs_jsonl)
    runs = [r for r in done if "seed" in r]
    collapse = [r for r in done if "last5_mean" in r]
    root = Path(tempfile.mkdtemp(prefix="a3c-bench-scaling-"))
    try:
        for i, seed in enumerate(args.seeds):
            order = args.workers[i % len(args.workers) :] + args.workers[: i % len(args.workers)]
            for n in order:
                for recipe in recipes:
                    if any((r["mode"], r["workers"], r["seed"]) == (recipe[0], n, seed) for r in runs):
                        continue  # measured already (--runs-jsonl)
                    say(PROG, f"{recipe[0]} workers={n} seed={seed} ...")
                    runs.append(_saved(args, measure(args, recipe, n, seed, root / f"{recipe[0]}-{n}-{seed}")))
                    say(PROG, f"  {runs[-1]['env_steps']} env steps, solved {runs[-1]['solved']}")
        for n in args.collapse or []:
            for recipe in recipes:
                if any((c["mode"], c["workers"]) == (recipe[0], n) for c in collapse):
                    continue
                say(PROG, f"collapse check: {recipe[0]} workers={n}, {args.collapse_steps} env steps ...")
                try:
                    check = collapse_check(args, recipe, n, root / f"collapse-{recipe[0]}-{n}")
                except Exception as e:  # reported; the other checks go on
                    check = {
                        "mode": recipe[0],
                        "workers": n,
                        "env_steps": None,
                        "evaluations": [],
                        "last5_mean": None,
                        "last5_min": None,
                        "held": False,
                        "error": str(e).splitlines()[0],
                    }
                collapse.append(_saved(args, check))
        results["runs"] = runs
        results["summary"] = summarize(runs, args.pool_base)
        results["collapse"] = collapse
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_tables(tables(results), args.plain)
    if args.out:
        write_json(args.out, results)
        say(PROG, f"wrote {args.out}")
    if args.plot:
        plot(results, args.plot)
        say(PROG, f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
