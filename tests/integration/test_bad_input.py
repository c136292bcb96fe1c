"""Bad input ends the whole job fast, with one line naming the bad key or value and no traceback.

Each case runs through `a3c-train` and through torchrun. torchrun itself always ends a failed job by
raising ChildFailedError from its own `main` (its failure report, not ours); that one traceback is
allowed, any other one — from a rank or from the launcher the package drives — fails the test.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Finished, Jobs

pytestmark = pytest.mark.integration

LOOPBACK = "127.0.0.1"

FAIL_WITHIN_S = 30
"""The whole job, every rank included, must be gone this soon after it starts."""

TORCHRUN_OWN_TRACEBACK = re.compile(
    r"Traceback \(most recent call last\):\n"
    r'  File "[^"\n]*/torchrun", line \d+, in <module>\n'
    r"(?:[ \t].*\n)*?"
    r"torch\.distributed\.elastic\.multiprocessing\.errors\.ChildFailedError:.*\n"
)

# id: (override, what one error line must name: the key, and the bad value where the message can show it)
BAD_INPUTS = {
    "unknown-env": ("env.id=NoSuchEnv-v0", ("env.id", "NoSuchEnv-v0")),
    "workers=0": ("workers=0", ("workers=0",)),
    "envs_per_worker=0": ("worker.envs_per_worker=0", ("worker.envs_per_worker=0",)),
    "rollout_len=0": ("worker.rollout_len=0", ("worker.rollout_len=0",)),
    "lr=0": ("optim.lr=0", ("optim.lr=0",)),
    "sync_env_steps=0": ("scale.sync_env_steps=0", ("scale.sync_env_steps=0",)),
    "gamma=0": ("algo.gamma=0", ("algo.gamma=0",)),
    "gamma=1.5": ("algo.gamma=1.5", ("algo.gamma=1.5",)),
    "unknown-key": ("optim.lrr=1e-3", ("optim.lrr",)),
    "bad-type": ("train.total_env_steps=abc", ("train.total_env_steps", "abc")),
}
NOT_UNDER_TORCHRUN = {"workers=0"}
"""`workers` sizes a local launch only; under torchrun the world size decides."""


def cases(ids: set[str] | None = None) -> list:
    return [pytest.param(*v, id=k) for k, v in BAD_INPUTS.items() if ids is None or k in ids]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that this test holds open (listening) for as long as it runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        s.listen()
        yield s.getsockname()[1]


def a3c_train(bin_dir: Path, overrides: list[str], run_dir: Path) -> list[str]:
    return [str(bin_dir / "a3c-train"), "logger=quiet", f"hydra.run.dir={run_dir}", *overrides]


def torchrun(bin_dir: Path, overrides: list[str], run_dir: Path) -> list[str]:
    return [
        str(bin_dir / "torchrun"),
        "--standalone",
        "--nproc-per-node=3",
        "-m",
        "distributed_a3c.train",
        "logger=quiet",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def assert_clean_failure(done: Finished, names: tuple[str, ...]) -> None:
    assert done.returncode != 0, done.describe()
    assert not done.leftover_pids, f"ranks outlived the job: {done.leftover_pids}\n{done.describe()}"
    error_lines = [ln for ln in done.stderr.splitlines() if "error" in ln and all(n in ln for n in names)]
    assert error_lines, f"no error line naming {names!r}\n{done.describe()}"
    output = TORCHRUN_OWN_TRACEBACK.sub("", done.output)
    assert "Traceback" not in output, done.describe()


@pytest.mark.timeout(FAIL_WITHIN_S + 30)
@pytest.mark.parametrize(("override", "names"), cases())
def test_a3c_train_rejects(override: str, names: tuple[str, ...], tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    done = jobs.run(a3c_train(venv_bin, [override], tmp_path / "run"), cwd=tmp_path, timeout=FAIL_WITHIN_S)
    assert_clean_failure(done, names)


@pytest.mark.timeout(FAIL_WITHIN_S + 30)
@pytest.mark.parametrize(("override", "names"), cases(set(BAD_INPUTS) - NOT_UNDER_TORCHRUN))
def test_torchrun_rejects(override: str, names: tuple[str, ...], tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    done = jobs.run(torchrun(venv_bin, [override], tmp_path / "run"), cwd=tmp_path, timeout=FAIL_WITHIN_S)
    assert_clean_failure(done, names)


@pytest.mark.timeout(FAIL_WITHIN_S + 30)
@pytest.mark.parametrize("launcher", [a3c_train, torchrun], ids=["a3c-train", "torchrun"])
def test_rpc_port_in_use_is_rejected(launcher, busy_port: int, tmp_path: Path, jobs: Jobs, venv_bin: Path) -> None:
    cmd = launcher(venv_bin, [f"rpc.port={busy_port}"], tmp_path / "run")
    done = jobs.run(cmd, cwd=tmp_path, timeout=FAIL_WITHIN_S)
    assert_clean_failure(done, (f"rpc.port={busy_port}",))


def _foreign_checkpoint(path: Path) -> Path:
    """A well-formed checkpoint of a CartPole run (its weights do not matter: the env is refused first)."""
    import torch

    config = {"env": {"id": "CartPole-v1"}, "model": {"name": "mlp", "hidden_sizes": [64, 64]}}
    torch.save({"model": {}, "optimizer": {"state": {}}, "env_steps": 0, "version": 0, "config": config}, path)
    return path


BAD_FILES = {
    "resume-not-a-checkpoint": (
        lambda tmp: [f"train.resume={(tmp / 'notes.txt').as_posix()}"],
        ("notes.txt", "not a readable distributed_a3c checkpoint"),
    ),
    "resume-another-env": (
        lambda tmp: ["env=acrobot", f"train.resume={_foreign_checkpoint(tmp / 'cartpole.pt')}"],
        ("cartpole.pt", "CartPole-v1", "Acrobot-v1"),
    ),
    "run-dir-not-writable": (
        lambda tmp: [f"hydra.run.dir={tmp / 'notes.txt' / 'run'}"],
        ("hydra.run.dir", "not writable"),
    ),
}


@pytest.mark.timeout(FAIL_WITHIN_S + 30)
@pytest.mark.parametrize("launcher", [a3c_train, torchrun], ids=["a3c-train", "torchrun"])
@pytest.mark.parametrize(("overrides", "names"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_checkpoints_and_run_directories_are_one_line(
    launcher, overrides, names: tuple[str, ...], tmp_path: Path, jobs: Jobs, venv_bin: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    cmd = launcher(venv_bin, overrides(tmp_path), tmp_path / "run")
    done = jobs.run(cmd, cwd=tmp_path, timeout=FAIL_WITHIN_S)
    assert_clean_failure(done, names)
    assert (tmp_path / "notes.txt").read_text() == "not a checkpoint\n"
