"""The benchmark harnesses end to end on a tiny budget: they run, exit 0, and write sane JSON.

Numbers from these runs mean nothing (seconds of work on a shared machine); only their shape is checked.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"

pytestmark = pytest.mark.integration
TOKEN_VAR = "A3C_BENCH_SMOKE_TOKEN"


def _tagged_pids(token: str) -> list[int]:
    """Live pids whose environment carries `token`: the harness and every process it started, however deep."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"{TOKEN_VAR}={token}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def run_script(
    args: list[str], timeout_s: float, make_env: Callable[..., dict[str, str]]
) -> subprocess.CompletedProcess:
    """Run a harness in its own process group and make sure nothing it started outlives it.

    The harness starts its jobs in sessions of their own, so on timeout it gets SIGTERM first (it then
    kills those sessions itself); whatever is still alive after that is found by an environment tag
    and killed by pid.
    """
    token = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=make_env(**{TOKEN_VAR: token}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    leftover: list[int] = []
    try:
        out, err = proc.communicate(timeout=timeout_s)
        deadline = time.monotonic() + 5.0
        while (leftover := _tagged_pids(token)) and time.monotonic() < deadline:
            time.sleep(0.1)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=20)
        raise
    finally:
        for pid in _tagged_pids(token):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not leftover, f"processes outlived the harness: {leftover}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(360)
def test_bench_runs_and_writes_json(tmp_path: Path, make_env: Callable[..., dict[str, str]]) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "scaling.png"
    r = run_script(
        [
            str(SCRIPTS / "bench_throughput.py"),
            "--seconds",
            "2",
            "--workers",
            "1",
            "--plain",
            "--out",
            str(out),
            "--plot",
            str(png),
            "worker.envs_per_worker=4",
        ],
        timeout_s=300,
        make_env=make_env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "throughput" in r.stdout and "ratios" in r.stdout
    res = json.loads(out.read_text())
    assert png.is_file() and png.stat().st_size > 0

    assert res["meta"]["env_id"] == "CartPole-v1"
    t = res["throughput"]
    assert positive(t["raw_env"]["steps_per_s"]) and t["raw_env"]["envs_per_worker"] == 4
    assert set(t["distributed"]) == {"1"}
    for name, job in [("in_process", t["in_process"]), ("workers=1", t["distributed"]["1"])]:
        for key in ("steps_per_s", "pushes_per_s", "window_s", "peak_rss_mb_server", "launch_to_exit_s"):
            assert positive(job[key]), (name, key, job[key])
        assert 0 <= job["server_busy_fraction"] <= 1, (name, job["server_busy_fraction"])
        assert set(job["time_split"]) == {"env", "act", "learn", "wait"}, name
        assert math.isclose(sum(job["time_split"].values()), 1.0, rel_tol=1e-6), name
        assert all(finite(v) and v >= 0 for v in job["time_per_push_ms"].values()), name
        assert finite(job["staleness_mean"]) and job["staleness_mean"] >= 0, name
        assert finite(job["staleness_p99"]) and job["staleness_p99"] >= 0, name
        assert job["dropped_pushes"] == 0, name
    assert positive(t["distributed"]["1"]["peak_rss_mb_worker_max"])
    ratios = res["ratios"]
    for key in ("in_process_vs_raw_env", "workers1_vs_raw_env", "workers1_vs_in_process"):
        assert positive(ratios[key]), (key, ratios.get(key))
    assert "threshold" not in res


@pytest.mark.timeout(360)
def test_bench_server_runs_and_writes_json(tmp_path: Path, make_env: Callable[..., dict[str, str]]) -> None:
    out = tmp_path / "server.json"
    r = run_script(
        [
            str(SCRIPTS / "bench_server.py"),
            "--sizes",
            "mlp",
            "--clients",
            "1,2",
            "--shards",
            "1,2",
            "--max-procs",
            "1",
            "--seconds",
            "1",
            "--warmup",
            "0.5",
            "--plain",
            "--out",
            str(out),
        ],
        timeout_s=300,
        make_env=make_env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    mlp = res["sizes"]["mlp"]
    assert 5_000 < mlp["numel"] < 20_000  # the CartPole actor-critic
    assert [c["clients"] for c in mlp["configs"]] == [1, 2]
    assert mlp["configs"][1]["procs"] == 1 and mlp["configs"][1]["threads_per_proc"] == 2
    for c in mlp["configs"]:
        for key in ("pushes_per_s", "latency_ms_p50", "latency_ms_p99", "payload_mb_per_s", "peak_rss_mb_server"):
            assert positive(c[key]), (c["clients"], key, c[key])
        assert c["latency_ms_p50"] <= c["latency_ms_p99"] <= c["latency_ms_max"]
        assert c["server_numel"] == mlp["numel"]
        assert 0 <= c["server_busy_fraction"] <= 1
        assert c["dropped_pushes"] == 0
    assert mlp["ceiling"]["at_clients"] in (1, 2)
    assert positive(mlp["ceiling"]["max_pushes_per_s"])
    sharded = res["sizes"]["mlp, 2 shards"]
    assert sharded["shards"] == 2 and sharded["numel"] == mlp["numel"]
    for c in sharded["configs"]:
        assert positive(c["pushes_per_s"]) and c["dropped_pushes"] == 0
        assert len(c["shard_busy_fractions"]) == 2 and all(b > 0 for b in c["shard_busy_fractions"]), c


@pytest.mark.timeout(200)
def test_bench_server_echo_on_pinned_cores(tmp_path: Path, make_env: Callable[..., dict[str, str]]) -> None:
    """--echo answers without updating (the RPC floor); --pin puts the server and the clients on separate cores."""
    out = tmp_path / "echo.json"
    args = [str(SCRIPTS / "bench_server.py"), "--sizes", "mlp", "--clients", "2", "--max-procs", "1"]
    args += ["--seconds", "1", "--warmup", "0.5", "--plain", "--echo", "--pin", "--out", str(out)]
    r = run_script(args, timeout_s=150, make_env=make_env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["meta"]["echo"] is True and res["meta"]["pin"] is True
    (config,) = res["sizes"]["mlp"]["configs"]
    assert positive(config["pushes_per_s"]) and 0 < config["server_cpu_fraction"] <= 1.5
    assert config["server_busy_fraction"] == 0  # the echo server never runs an update


@pytest.mark.timeout(200)
def test_bench_server_think_time_paces_the_clients_over_shared_memory(
    tmp_path: Path, make_env: Callable[..., dict[str, str]]
) -> None:
    """--think-ms bounds each client's rate; rpc.transports reaches the server and clients alike."""
    out = tmp_path / "think.json"
    args = [str(SCRIPTS / "bench_server.py"), "--sizes", "mlp", "--clients", "1", "--think-ms", "50"]
    args += ["--seconds", "2", "--warmup", "0.5", "--plain", "--out", str(out), "rpc.transports=[shm,uv]"]
    r = run_script(args, timeout_s=150, make_env=make_env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["meta"]["think_ms"] == 50 and "rpc.transports=[shm,uv]" in res["meta"]["overrides"]
    (config,) = res["sizes"]["mlp"]["configs"]
    assert 0 < config["pushes_per_s"] <= 1000 / 50  # at most one push per think time
    assert positive(config["latency_ms_p99"])


def test_bench_server_negative_think_time_is_a_usage_error(make_env: Callable[..., dict[str, str]]) -> None:
    r = run_script([str(SCRIPTS / "bench_server.py"), "--think-ms", "-1"], timeout_s=60, make_env=make_env)
    assert r.returncode == 2
    assert "--think-ms must be >= 0, not -1" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(200)
def test_bench_modes_runs_and_writes_json(tmp_path: Path, make_env: Callable[..., dict[str, str]]) -> None:
    args = [str(SCRIPTS / "bench_modes.py"), "--modes", "central", "--seeds", "1", "--pong-minutes", "0"]
    r = run_script([*args, "--plain", "--out-dir", str(tmp_path)], timeout_s=180, make_env=make_env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "bench_modes.json").read_text())
    assert (tmp_path / "modes.png").stat().st_size > 0 and res["pong"] == {}
    [row] = res["cartpole"]["central"]
    assert row["seed"] == 1 and isinstance(row["reached"], bool)
    for key in ("launch_to_exit_s", "env_steps", "env_steps_per_s", "server_busy_fraction", "wire_bytes_per_env_step"):
        assert positive(row[key]), (key, row)
    assert finite(row["policy_lag_mean"]) and row["policy_lag_mean"] >= 0
    bad = run_script([str(SCRIPTS / "bench_modes.py"), "--modes", "async"], timeout_s=60, make_env=make_env)
    assert bad.returncode != 0 and "--modes async is invalid" in bad.stderr


@pytest.mark.timeout(240)
def test_bench_scaling_on_two_torchrun_agents_writes_json(
    tmp_path: Path, make_env: Callable[..., dict[str, str]], namespaces_allowed: None
) -> None:
    """--launcher netns: each job is two torchrun agents in namespaces of its own, RPC across the bridge; a
    low threshold so that the run solves within seconds."""
    out = tmp_path / "scaling.json"
    args = [str(SCRIPTS / "bench_scaling.py"), "--launcher", "netns", "--nodes", "2", "--workers", "2"]
    args += ["--seeds", "1", "--threshold", "30", "--interval", "2000", "--max-steps", "40000", "--plain"]
    r = run_script([*args, "--out", str(out)], timeout_s=200, make_env=make_env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["meta"]["launcher"] == "netns" and res["meta"]["nodes"] == 2
    (run,) = res["runs"]
    assert run["workers"] == 2 and run["envs"] == 64 and run["solved"] is True, run
    assert 0 < run["env_steps"] <= 40000 and run["evaluations"], run
    summary = res["summary"]["grad"]["2"]
    assert summary["solved"] == "1/1" and summary["median_env_steps_per_env"] == run["env_steps"] / 64, summary


@pytest.mark.timeout(120)
def test_bench_sync_shape_replays_each_shape_and_writes_json(
    tmp_path: Path, make_env: Callable[..., dict[str, str]]
) -> None:
    out = tmp_path / "shapes.json"
    args = [str(SCRIPTS / "bench_sync_shape.py"), "--seeds", "1", "--shapes", "base=2x5x4,fewer=4x5x2"]
    r = run_script([*args, "--max-steps", "4000", "--plain", "--out", str(out)], timeout_s=100, make_env=make_env)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [(x["label"], x["workers"], x["envs"]) for x in runs] == [("base", 2, 4), ("fewer", 4, 2)]
    assert all(4000 <= x["env_steps"] <= 4000 + 4 * 2 * 5 and x["steps"] > 0 for x in runs), runs
    bad = run_script([str(SCRIPTS / "bench_sync_shape.py"), "--shapes", "whole=16x20"], timeout_s=60, make_env=make_env)
    assert bad.returncode == 2 and "must be LABEL=WORKERSxROLLOUTxENVS" in bad.stderr and "Traceback" not in bad.stderr
