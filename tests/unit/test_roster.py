"""The lead's view of its workers: lost once, departed in order, and an end that waits only for the living."""

from __future__ import annotations

import threading
import time

from distributed_a3c.server import WorkerRoster


def test_a_lost_worker_is_reported_once_and_no_longer_watched():
    roster = WorkerRoster(range(1, 4))
    assert roster.lose(2, "connection reset") is True
    assert roster.lose(2, "connection reset") is False
    assert roster.pending() == [1, 3] and roster.alive == 2
    assert roster.lost == {2: "connection reset"}


def test_a_worker_that_said_goodbye_is_not_lost_afterwards():
    roster = WorkerRoster([1, 2])
    roster.depart(1)
    assert roster.lose(1, "its process exited") is False  # it left in good order
    assert roster.pending() == [2] and roster.alive == 2


def test_the_end_waits_for_the_living_only():
    roster = WorkerRoster([1, 2, 3])
    roster.lose(3, "node died")
    threading.Timer(0.05, roster.depart, args=(1,)).start()
    threading.Timer(0.10, roster.depart, args=(2,)).start()
    t0 = time.monotonic()
    assert roster.wait_all_departed(timeout_s=5.0)
    assert time.monotonic() - t0 < 2.0


def test_the_end_gives_up_on_a_silent_worker_after_the_grace():
    roster = WorkerRoster([1, 2])
    roster.depart(1)
    assert not roster.wait_all_departed(timeout_s=0.05)
