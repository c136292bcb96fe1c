"""How a rank takes signals, and a launcher that disappears.

Ctrl-C or SIGTERM on rank 0 stops training gracefully (final checkpoint and summary); a second signal,
later than a moment after the first, forces the exit. A rank whose launcher died leaves by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from distributed_a3c.distributed.liveness import watch_parent
from distributed_a3c.distributed.supervise import record_exit, say_line

ORPHAN_DEADLINE_S = 30.0  # rank 0 without its agent: this long to checkpoint, then it exits regardless
FORCE_AFTER_S = 1.0  # a signal this long after the first forces the exit (one Ctrl-C can arrive twice)

_interrupted = threading.Event()
_first_signal: int | None = None
_first_signal_at = 0.0
_launcher: int | None = None  # the pid of this rank's launcher (its parent at start)


def _on_stop_signal(signum: int, frame: object) -> None:
    global _first_signal, _first_signal_at
    if not _interrupted.is_set():
        _first_signal, _first_signal_at = signum, time.monotonic()
        _interrupted.set()
    elif time.monotonic() - _first_signal_at > FORCE_AFTER_S:
        raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for a graceful end


def terminated_by_launcher() -> bool:
    """True once a SIGTERM asked this rank to stop: the launcher is tearing the job down."""
    return _first_signal == signal.SIGTERM


def install_signal_handlers(rank: int) -> None:
    """Ctrl-C makes the server stop training gracefully (final checkpoint and summary); so does SIGTERM
    once training has begun (`arm_graceful_sigterm`).

    Ctrl-C reaches every rank of a terminal's job; workers ignore it and stop when the server's reply
    says so. A SIGTERM on a worker (e.g. from torchrun tearing the job down) ends it at once, and so it
    does on rank 0 until its RPC agent is up: `init_rpc` blocks in C++, where a Python handler would only
    run after torchrun had waited 30 s and sent SIGKILL. Before that point there is nothing new to save.
    """
    if rank == 0:
        signal.signal(signal.SIGINT, _on_stop_signal)
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    global _launcher
    _launcher = os.getppid()
    watch_parent(_on_orphaned if rank == 0 else _exit_orphaned)


def arm_graceful_sigterm() -> None:
    """From here on (rank 0's RPC agent is up), SIGTERM stops training gracefully like Ctrl-C."""
    signal.signal(signal.SIGTERM, _on_stop_signal)


def _exit_orphaned(parent: int) -> None:
    """A worker or shard whose torchrun agent died: nobody will restart or collect it, so it leaves."""
    record_exit(1, f"its launcher (pid {parent}) is gone")
    say_line(
        f"a3c-train: error (rank {os.environ.get('RANK', '?')} on {socket.gethostname()}): its launcher "
        f"(pid {parent}) is gone; exiting"
    )
    os._exit(1)


def _on_orphaned(parent: int) -> None:
    """Rank 0 whose agent died: stop as after a SIGTERM (checkpoint and summary), then exit regardless."""
    say_line(
        f"a3c-train: error (rank 0 on {socket.gethostname()}): its launcher (pid {parent}) is gone; "
        "saving a checkpoint and exiting"
    )
    _on_stop_signal(signal.SIGTERM, None)
    threading.Timer(ORPHAN_DEADLINE_S, os._exit, args=(1,)).start()


def interrupted() -> bool:
    """True once Ctrl-C or SIGTERM (or the launcher's death) asked rank 0 to stop."""
    return _interrupted.is_set()


def launcher_gone() -> bool:
    """True when this rank's launcher is dead now, even before the parent watch (which polls) has noticed:
    the workers, orphaned as well, may leave first, and their going is then not the cause of the stop."""
    return _launcher is not None and os.getppid() != _launcher
