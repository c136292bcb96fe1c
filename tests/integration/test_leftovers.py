"""The test harness sees what a job leaves behind: a process in a session of its own (as torchrun starts
every rank) that outlives the job's leader is flagged, then killed."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Jobs

pytestmark = pytest.mark.integration

LEAVE_ONE_BEHIND = (
    "import subprocess, sys\n"
    "rank = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
    "print(rank.pid, flush=True)\n"
)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.timeout(60)
def test_a_rank_left_behind_in_its_own_session_is_flagged_and_killed(tmp_path: Path, jobs: Jobs) -> None:
    done = jobs.run([sys.executable, "-c", LEAVE_ONE_BEHIND], cwd=tmp_path, timeout=30)
    assert done.returncode == 0, done.describe()
    left = int(done.stdout.split()[0])
    assert os.getpgid(os.getpid()) != left
    assert done.leftover_pids == [left], done.describe()
    deadline = time.monotonic() + 5  # SIGKILL is delivered asynchronously
    while _running(left) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(left), "the harness flagged the process but left it running"
