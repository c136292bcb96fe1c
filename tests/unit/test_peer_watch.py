"""Telling slow from dead: a peer that answers its pings late but within rpc.liveness_timeout_s stays; one
that does not answer at all is lost once, with the reason."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from distributed_a3c.distributed import signals
from distributed_a3c.distributed.liveness import PeerWatch
from distributed_a3c.server import WorkerRoster


def _ping_answered_after(delays: dict[int, float | None]):
    """A ping that peer p answers after delays[p] s; None: never (the future fails at its timeout)."""

    def ping(peer: int, timeout_s: float) -> torch.futures.Future:
        future: torch.futures.Future = torch.futures.Future()
        delay = delays[peer]

        def answer() -> None:
            if delay is not None and delay < timeout_s:
                time.sleep(delay)
                future.set_result(True)
            else:
                time.sleep(timeout_s)
                future.set_exception(RuntimeError(f"RPC ran for more than set timeout ({timeout_s * 1000:.0f} ms)"))

        threading.Thread(target=answer, daemon=True).start()
        return future

    return ping


def test_a_slow_peer_stays_and_a_silent_one_is_lost_once() -> None:
    roster = WorkerRoster([1, 2, 3])
    lost: list[tuple[int, str]] = []

    def on_lost(rank: int, reason: str) -> None:
        if roster.lose(rank, reason):
            lost.append((rank, reason))

    # rank 1 answers at once, rank 2 after 0.6 s (busy: a long env step, a loaded machine), rank 3 never.
    ping = _ping_answered_after({1: 0.0, 2: 0.6, 3: None})
    watch = PeerWatch(roster.pending, ping, timeout_s=1.0, on_lost=on_lost, interval_s=0.05).start()
    time.sleep(3.5)
    watch.stop()
    assert [rank for rank, _ in lost] == [3]
    assert "more than set timeout (1000 ms)" in lost[0][1]
    assert roster.alive == 2 and roster.pending() == [1, 2]


def test_a_lost_worker_heard_from_again_counts_as_alive() -> None:
    roster = WorkerRoster([1, 2])
    assert roster.lose(2, "no answer")
    assert roster.alive == 1
    assert roster.revive(2) and not roster.revive(2)  # said once
    assert roster.alive == 2 and roster.pending() == [1, 2]
    roster.depart(1)
    assert not roster.revive(1)  # a worker that left in good order is not brought back


def test_a_liveness_timeout_must_be_positive_and_within_the_rpc_timeout() -> None:
    import pytest

    from distributed_a3c.config import Config, ConfigError, validate

    for value in (0.0, -1.0, 61.0):
        cfg = Config()
        cfg.rpc.liveness_timeout_s = value
        with pytest.raises(
            ConfigError, match=rf"rpc.liveness_timeout_s={value!r} is invalid: must be > 0 and at most rpc.timeout_s=60"
        ):
            validate(cfg)
    cfg = Config()
    cfg.rpc.timeout_s, cfg.rpc.liveness_timeout_s = 120.0, 90.0
    validate(cfg)


def test_a_launcher_is_gone_as_soon_as_the_parent_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 asks at the moment its workers vanish, before its parent watch (which polls) has noticed: a
    launcher other than the current parent is gone, the current one is not."""
    monkeypatch.setattr(signals, "_launcher", os.getppid())
    assert not signals.launcher_gone()
    monkeypatch.setattr(signals, "_launcher", os.getppid() + 1)
    assert signals.launcher_gone()
    monkeypatch.setattr(signals, "_launcher", None)
    assert not signals.launcher_gone()  # never installed (a unit test, the serial runner)
