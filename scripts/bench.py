"""Throughput and time-to-threshold benchmarks for distributed_a3c, all ratios taken from one run.

    python scripts/bench.py                                        # raw env, in-process, 1/2/4 workers; 10 s each
    python scripts/bench.py --seconds 30 --workers 1,2,4,8 --out results.json --plot docs/scaling.png
    python scripts/bench.py --steps 200000                         # a step budget instead of a time budget
    python scripts/bench.py --sb3                                  # + time to mean-100 >= 475: ours vs SB3 A2C
    python scripts/bench.py --sb3 --seeds 5 --skip-throughput      # that comparison 5 times, interleaved; medians
    python scripts/bench.py worker.envs_per_worker=32 optim=rmsprop    # Hydra overrides pass through to every job

What it measures, each in a fresh process so that no job inherits another's memory or warm caches:
  raw_env      the worker's vector env (same env, envs_per_worker) stepped with random actions: the ceiling
  in_process   one Worker against the in-process ParameterServer (no RPC), the algorithm's own cost
  workers=N    `a3c-train` (1 server + N workers over loopback RPC), read back from metrics.jsonl/summary.json
  sb3 (--sb3)  Stable-Baselines3 A2C, RL-Zoo CartPole-v1 hyperparameters, needs `pip install -e .[bench]`

Rates are steady-state: from the first metric row with env steps (start-up excluded) to the last periodic row.
The time split (env stepping / acting / loss+backward / waiting on the server) is the push-weighted mean of
the rows' worker/* keys. Time to threshold is launch-to-exit wall time of the whole process, imports included,
for ours and for SB3 alike. The module imports only the standard library at the top so that the SB3 child
starts as cheaply as `python -m distributed_a3c.train` does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import finite_json, fmt, int_list, kill_group, tail  # scripts/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
RESULT_MARK = "BENCH_RESULT "
SPLIT_KEYS = ("env", "act", "learn", "wait")
# RL-Zoo (rl-baselines3-zoo hyperparams/a2c.yml) CartPole-v1: n_envs 8, MlpPolicy, ent_coef 0.0; rest SB3 defaults.
SB3_ZOO = {"n_envs": 8, "policy": "MlpPolicy", "ent_coef": 0.0}


# ----- child processes: one measurement each, one JSON line on stdout ------------------------------------
def _emit(result: dict[str, Any]) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)


def _compose(overrides: list[str]):
    from distributed_a3c.train import precheck

    return precheck(overrides)


def child_raw_env(overrides: list[str], seconds: float | None, steps: int | None) -> None:
    """Step the worker's vector env with pre-sampled random actions: what a worker could reach at best."""
    from distributed_a3c.envs import make_vector_env
    from distributed_a3c.worker import peak_rss_mb, worker_seed

    cfg = _compose(overrides)
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
    _emit(
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

    cfg = _compose([*overrides, "logger=quiet", f"train.log_interval_s={log_interval_s}"])
    with tempfile.TemporaryDirectory(prefix="a3c-bench-serial-") as run_dir:
        summary = run_serial(cfg, Path(run_dir), OmegaConf.to_container(OmegaConf.structured(cfg)), workers=1)
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    summary["peak_rss_mb_by_rank"] = {"0": peak_rss_mb()}
    _emit({"summary": summary, "rows": rows})


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
    _emit(
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


# ----- running children ----------------------------------------------------------------------------------
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


def run_child(kind: str, args: list[str], timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *args]
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
    summary_path = run_dir / "summary.json"
    if rc != 0 or not summary_path.is_file():
        raise RuntimeError(f"a3c-train exited with code {rc}:\n{tail(err or out)}")
    rows_path = run_dir / "metrics.jsonl"
    rows = [json.loads(ln) for ln in rows_path.read_text().splitlines() if ln.strip()] if rows_path.is_file() else []
    return {"summary": json.loads(summary_path.read_text()), "rows": rows, "launch_to_exit_s": wall}


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


# ----- the benchmark sections -------------------------------------------------------------------------------
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

    say("raw env (random actions) ...")
    budget_args = ["--steps", str(args.steps)] if args.steps is not None else ["--seconds", str(args.seconds)]
    out["raw_env"] = run_child("raw", [*budget_args, *overrides], timeout)

    say("in-process worker + server (no RPC) ...")
    r = run_child("inprocess", ["--log-interval", str(args.log_interval), *with_overrides(overrides, common)], timeout)
    out["in_process"] = {**steady_state(r["rows"], r["summary"], 1), "launch_to_exit_s": r["launch_to_exit_s"]}

    out["distributed"] = {}
    for n in args.workers:
        say(f"a3c-train workers={n} ...")
        r = run_train(with_overrides(overrides, {**common, "workers": n}), run_root / f"workers{n}", timeout)
        out["distributed"][str(n)] = {
            **steady_state(r["rows"], r["summary"], n),
            "launch_to_exit_s": r["launch_to_exit_s"],
        }
    return out


def time_to_threshold(args: argparse.Namespace, overrides: list[str], run_root: Path) -> dict[str, Any]:
    """Ours and SB3 to mean-100 >= threshold, `--seeds` times, interleaved (the order alternates per seed)."""
    runs: list[dict[str, Any]] = []
    timeout = 60 * args.threshold_max_minutes + 180
    for i in range(args.seeds):
        seed = args.seed + i
        order = ("ours", "sb3") if i % 2 == 0 else ("sb3", "ours")
        for impl in order:
            say(f"time to {args.threshold:g}: {impl}, seed {seed} ...")
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
    """Every ratio from this one run: ours vs the raw env rate, N workers vs the fewest, ours vs SB3."""
    out: dict[str, float] = {}
    t = results.get("throughput")
    if t:
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
    th = results.get("threshold")
    if th:
        ours, sb3 = th["median"]["ours"], th["median"]["sb3"]
        out["sb3_wall_over_ours_wall"] = sb3["wall_s"] / ours["wall_s"]
        out["ours_steps_per_s_over_sb3"] = ours["steps_per_s"] / sb3["steps_per_s"]
        out["ours_env_steps_over_sb3"] = ours["env_steps"] / sb3["env_steps"]
    return out


# ----- output ----------------------------------------------------------------------------------------------
def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    t = results.get("throughput")
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
    th = results.get("threshold")
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


def print_tables(results: dict[str, Any], plain: bool) -> None:
    from _common import print_tables as print_formatted

    print_formatted(tables(results), plain, first_column_left=True)


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def meta(args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
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
        "budget": f"{args.steps} env steps per job" if args.steps is not None else f"{args.seconds:g} s per job",
    }


def _env_of(overrides: list[str]) -> str:
    group = next((o.split("=", 1)[1] for o in overrides if o.startswith("env=")), "cartpole")
    path = ROOT / "conf" / "env" / f"{group}.yaml"
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.strip().startswith("id:"):
            return line.split(":", 1)[1].strip()
    return group


# ----- command line ----------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every job, as for a3c-train")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=float, default=10.0, help="time budget per throughput job (default 10)")
    budget.add_argument("--steps", type=int, default=None, help="env-step budget per throughput job instead")
    p.add_argument("--workers", type=int_list, default=[1, 2, 4], help="worker counts to run (default 1,2,4)")
    p.add_argument("--log-interval", type=float, default=0.5, help="seconds between metric rows (default 0.5)")
    p.add_argument("--timeout", type=float, default=None, help="kill a throughput job after this many seconds")
    p.add_argument("--skip-throughput", action="store_true", help="only the time-to-threshold comparison")
    p.add_argument("--sb3", action="store_true", help="add time to threshold: ours vs SB3 A2C (needs .[bench])")
    p.add_argument("--seeds", type=int, default=1, help="repeat the time-to-threshold comparison N times")
    p.add_argument("--seed", type=int, default=1, help="first seed of the time-to-threshold runs")
    p.add_argument("--threshold", type=float, default=475.0, help="target mean-100 return (default 475)")
    p.add_argument("--threshold-max-minutes", type=float, default=10.0, help="cap per time-to-threshold run")
    p.add_argument("--threshold-max-steps", type=int, default=2_000_000, help="env-step cap per threshold run")
    p.add_argument("--sb3-env", default="CartPole-v1", help="env id for SB3 (its hyperparameters are CartPole's)")
    p.add_argument(
        "--sb3-threads",
        type=int,
        default=1,
        help="torch threads for SB3 (default 1, as each of our workers; 0 keeps torch's default, which"
        " collapses on a busy machine)",
    )
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write a scaling plot PNG here")
    p.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    p.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories under this folder")
    p.add_argument("--child", choices=["raw", "inprocess", "sb3"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if args.child == "raw":
        child_raw_env(args.overrides, None if args.steps is not None else args.seconds, args.steps)
        return 0
    if args.child == "inprocess":
        child_in_process(args.overrides, args.log_interval)
        return 0
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
    if args.seeds > 1 and not args.sb3:
        parser().error("--seeds repeats the time-to-threshold comparison: add --sb3")
    if args.skip_throughput and not args.sb3:
        parser().error("--skip-throughput leaves nothing to run without --sb3")
    if args.sb3:
        import importlib.util

        if importlib.util.find_spec("stable_baselines3") is None:
            parser().error("--sb3 needs stable-baselines3: pip install -e '.[bench]'")
    if args.timeout is None:
        args.timeout = (args.seconds + 120) if args.steps is None else 900.0

    overrides = list(args.overrides)
    results: dict[str, Any] = {"meta": meta(args, overrides)}
    run_root = args.keep_runs or Path(tempfile.mkdtemp(prefix="a3c-bench-"))
    run_root.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_throughput:
            results["throughput"] = throughput(args, overrides, run_root)
        if args.sb3:
            results["threshold"] = time_to_threshold(args, overrides, run_root)
    finally:
        if args.keep_runs is None:
            shutil.rmtree(run_root, ignore_errors=True)
    results["ratios"] = ratios(results)
    print_tables(results, args.plain)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(finite_json(results), indent=2, default=_json_default, allow_nan=False) + "\n")
        say(f"wrote {args.out}")
    if args.plot and "throughput" in results and results["throughput"]["distributed"]:
        plot(results, args.plot)
        say(f"wrote {args.plot}")
    return 0


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


if __name__ == "__main__":
    sys.exit(main())
