"""Shared test helpers: free loopback ports, child-process environments, and jobs that never outlive a test.

Every process a test starts carries a tag of its job in its environment (`A3C_TEST_JOB`), which everything
it starts inherits: torchrun's agent, its ranks (each in a session of its own), anything they fork. A
timeout, a failed assertion or the end of the test kills every process with the tag, and a job that leaves
one running after its leader exited is flagged (`Finished.leftover_pids`), whatever its process group.

Tests reach these helpers through fixtures, never `from conftest import ...`: tests/unit has a
conftest.py of its own, and pytest keeps only one module named `conftest` importable at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
"""The venv's bin directory (tests run with its python): `a3c-train`, `torchrun`."""

LOOPBACK = "127.0.0.1"

# Set by torchrun / a launcher around pytest; a child must never inherit another job's rank or store.
_JOB_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TP_SOCKET_IFNAME",
    "GLOO_SOCKET_IFNAME",
)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """This environment minus any job variables, unbuffered output, one thread per op, W&B quiet."""
    env = {k: v for k, v in os.environ.items() if k not in _JOB_VARS}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", WANDB_SILENT="true", NO_COLOR="1")
    env.update(extra)
    return env


JOB_TAG = "A3C_TEST_JOB"


def tagged_processes(tag: str) -> list[int]:
    """Pids of running processes (not zombies) whose environment carries `A3C_TEST_JOB=<tag>`."""
    needle = f"{JOB_TAG}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def live_group_members(pgid: int) -> list[int]:
    """Pids in process group `pgid` that are still running (zombies awaiting a reaper do not count)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces, so split after its closing paren.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_group(pgid: int) -> None:
    """SIGKILL every process in group `pgid` (no-op when none is left)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@dataclass
class Finished:
    """A job that exited: its exit status, its output, and whether any process of it outlived it."""

    cmd: Sequence[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float
    leftover_pids: list[int]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.cmd)}\nexit {self.returncode} after {self.elapsed_s:.1f} s\n"
            f"--- stdout (tail)\n{self.stdout[-4000:]}\n--- stderr (tail)\n{self.stderr[-6000:]}"
        )


class Job:
    """A command running in its own session; stdout/stderr go to files so two jobs never block on pipes."""

    def __init__(self, cmd: Sequence[str], cwd: Path, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.cmd = [str(c) for c in cmd]
        self.tag = uuid.uuid4().hex
        env = {**env, JOB_TAG: self.tag}
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path = log_dir / f"{name}.stdout"
        self.err_path = log_dir / f"{name}.stderr"
        self.t0 = time.monotonic()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.popen = subprocess.Popen(
                self.cmd, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pgid = self.popen.pid  # a session leader's pgid is its pid

    def wait(self, timeout: float) -> Finished:
        """Wait up to `timeout` s; on timeout kill the whole group and fail the test with the output."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"timed out after {timeout} s, killed:\n{self._finished(-9, []).describe()}")
        # The leader is gone; its ranks should be too. Give a dying rank a moment, then look.
        deadline = time.monotonic() + 3.0
        while (left := self.live_members()) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.kill()
        return self._finished(code, left)

    def live_members(self) -> list[int]:
        """Every process of the job still running: by its tag, and in the leader's process group."""
        return sorted(set(tagged_processes(self.tag)) | set(live_group_members(self.pgid)))

    def kill(self) -> None:
        kill_group(self.pgid)
        kill_pids(tagged_processes(self.tag))
        if self.popen.poll() is None:
            self.popen.wait()

    def _finished(self, code: int, leftover: list[int]) -> Finished:
        return Finished(
            self.cmd,
            code,
            self.out_path.read_text(errors="replace"),
            self.err_path.read_text(errors="replace"),
            time.monotonic() - self.t0,
            leftover,
        )


class Jobs:
    """Starts jobs for one test and kills every one of their process groups when the test ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._jobs: list[Job] = []

    def start(self, cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None, name: str | None = None) -> Job:
        job = Job(cmd, cwd, env if env is not None else child_env(), self.log_dir, name or f"job{len(self._jobs)}")
        self._jobs.append(job)
        return job

    def run(
        self, cmd: Sequence[str], cwd: Path, timeout: float, env: dict[str, str] | None = None, name: str | None = None
    ) -> Finished:
        return self.start(cmd, cwd, env, name).wait(timeout)

    def train(self, overrides: Sequence[str], run_dir: Path, timeout: float) -> tuple[Finished, dict]:
        """`a3c-train logger=quiet <overrides> hydra.run.dir=<run_dir>` from the repo root, which must exit 0;
        returns the finished job and the run's summary.json."""
        cmd = [BIN / "a3c-train", "logger=quiet", *overrides, f"hydra.run.dir={run_dir}"]
        done = self.run(cmd, cwd=REPO, timeout=timeout)
        assert done.returncode == 0, done.describe()
        return done, json.loads((run_dir / "summary.json").read_text())

    def kill_all(self) -> None:
        for job in self._jobs:
            job.kill()


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    """Run commands as killable process groups; nothing a test started survives it."""
    js = Jobs(tmp_path / "_logs")
    try:
        yield js
    finally:
        js.kill_all()


def rank_pids(launcher_pid: int) -> dict[int, int]:
    """Global rank -> pid of the ranks a launcher started: from their environment under torchrun; in
    fork order under a3c-train (its forked ranks set RANK after they start, so /proc does not show it)."""
    tasks = Path(f"/proc/{launcher_pid}/task").iterdir()
    children = sorted(int(p) for t in tasks for p in (t / "children").read_text().split())
    ranks = {}
    for pid in children:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks.update({int(v[5:]): pid for v in env if v.startswith(b"RANK=")})
    return ranks or dict(enumerate(children))


def metrics_rows(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl so far (none before it exists)."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="session")
def ranks_of() -> Callable[[int], dict[int, int]]:
    """`ranks_of(launcher_pid)`: global rank -> pid of the ranks that launcher started."""
    return rank_pids


@pytest.fixture(scope="session")
def metrics_of() -> Callable[[Path], list[dict]]:
    """`metrics_of(run_dir)`: the rows of the run's metrics.jsonl so far."""
    return metrics_rows


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The bin directory of the python running the tests (the venv): `a3c-train`, `torchrun`."""
    return BIN


@pytest.fixture(scope="session")
def get_free_port() -> Callable[[], int]:
    """`get_free_port()`: a port that was free on 127.0.0.1 a moment ago."""
    return free_port


@pytest.fixture(scope="session")
def make_env() -> Callable[..., dict[str, str]]:
    """`make_env(**extra)`: the environment for a child process (see `child_env`)."""
    return child_env
