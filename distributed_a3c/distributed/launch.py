"""`a3c-train` outside torchrun: start the server rank(s) and workers on this machine via torchrun's launcher API."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch


class _DropTraceback(logging.Filter):
    """Keep the launcher's log line about a failed rank, drop the traceback of its own join() call.

    That traceback is torch's internals; the rank has already said what went wrong in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _signal_name(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    # SIGKILL that nobody sent by hand is most often the kernel's out-of-memory killer.
    return f"{name} (if nobody sent it: out of memory? see dmesg)" if signum == signal.SIGKILL else name


def _signal_children(signum: int) -> None:
    """Send `signum` to this process's children (the ranks, forked by torchrun's agent in this process)."""
    children: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        with contextlib.suppress(OSError):
            children.update(int(pid) for pid in (task / "children").read_text().split())
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def launch_local(num_ranks: int, max_restarts: int, entry: Callable[..., int], *args: object) -> int:
    """Run `entry(*args)` in `num_ranks` ranks on this machine; return the job's exit code.

    Ranks are forked from this process, which has already imported torch and composed the config:
    that saves every rank the ~1.5 s torch import and the Hydra composition. When a rank fails, every
    rank is restarted up to `max_restarts` times (they resume from the run directory's checkpoint).
    """
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=num_ranks,
        run_id=f"a3c-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        rdzv_configs={"is_host": True},
        max_restarts=max_restarts,
        monitor_interval=0.1,
        start_method="fork",
        # Ctrl-C reaches every rank anyway and the server stops the job gracefully; the launcher
        # notes it, passes it on to its ranks (for a SIGINT sent to it alone: rank 0 takes a second one
        # within a second as the same Ctrl-C, workers ignore it), waits for them and exits 130 (it still
        # tears them down on SIGTERM/SIGHUP/SIGQUIT).
        signals_to_handle="SIGTERM,SIGHUP,SIGQUIT",
    )
    # The ranks are forked while the first ones already connect to the job's store. Hosted by this
    # process, the store's thread formats each new peer's address with getnameinfo, and a fork taken while
    # it holds libc's resolver lock leaves a rank stuck forever at its first name lookup (seen at 64
    # ranks). Unshared, the store the ranks meet in is rank 0's: nothing here answers them while forking.
    os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_DropTraceback())
    interrupted: list[int] = []

    def on_interrupt(signum: int, frame: object) -> None:
        if not interrupted:  # a `kill -INT` of this process alone, or a wrapper's forwarded Ctrl-C
            _signal_children(signal.SIGINT)
        interrupted.append(signum)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        elastic_launch(config, entry)(*args)
    except SignalException as e:
        print(
            f"a3c-train: stopped by {signal.Signals(e.sigval).name}; rank 0 wrote its checkpoint and summary",
            file=sys.stderr,
        )
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode < 0:  # killed by a signal: it had no chance to say why
            print(f"a3c-train: error: rank {rank} was killed by {_signal_name(-failure.exitcode)}", file=sys.stderr)
            return 128 - failure.exitcode
        print(
            f"a3c-train: error: rank {rank} exited with code {failure.exitcode}; see its message above", file=sys.stderr
        )
        return failure.exitcode or 1
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:  # the job stopped as asked, but did not finish: say so to a calling script
        print("a3c-train: interrupted; rank 0 wrote its checkpoint and summary", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0
