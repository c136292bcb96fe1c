"""Every attempt of a torchrun job meets in keys of its own, in the one store torchrun keeps for the job."""

from __future__ import annotations

import datetime
import socket

import pytest
import torch.distributed as dist

from distributed_a3c.distributed import rendezvous


@pytest.fixture
def agent_store(monkeypatch):
    """A TCP store standing in for torchrun's agent store, shared by every 'attempt' of a test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=datetime.timedelta(seconds=10))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    _new_process(monkeypatch)
    yield server


def _new_process(monkeypatch) -> None:
    """What a restarted rank starts with: no store of this module's yet."""
    monkeypatch.setattr(rendezvous, "_attempt_store", None)
    monkeypatch.setattr(rendezvous, "_stores", {})
    monkeypatch.setattr(rendezvous, "_hosts", {})


def _attempt_keys(monkeypatch, restart: int, world_size: int = 2) -> tuple[str, str]:
    """The prefixed key `x` as ranks 0 and 1 of one attempt see it (written by rank 0)."""
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))
    seen = []
    for rank in (0, 1):
        _new_process(monkeypatch)
        store = rendezvous.attempt_store(rank, world_size, 10.0)
        if rank == 0:
            store.set("x", f"attempt {restart} world {world_size}")
        seen.append(store.get("x").decode())
    return seen[0], seen[1]


def test_the_ranks_of_one_attempt_share_keys_that_a_later_attempt_does_not_see(agent_store, monkeypatch):
    first = _attempt_keys(monkeypatch, restart=0)
    assert first == ("attempt 0 world 2", "attempt 0 world 2")
    _new_process(monkeypatch)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    restarted = rendezvous.attempt_store(0, 2, 10.0)
    assert not restarted.check(["x"]), "a restarted attempt read the failed attempt's keys"


def test_a_membership_change_back_to_the_same_world_size_gets_fresh_keys(agent_store, monkeypatch):
    """torchrun does not count membership changes as restarts: a node that leaves and another that joins
    give an attempt with the same restart count and world size as an earlier one."""
    _attempt_keys(monkeypatch, restart=0, world_size=2)
    _attempt_keys(monkeypatch, restart=0, world_size=4)
    _new_process(monkeypatch)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    again = rendezvous.attempt_store(0, 2, 10.0)
    assert not again.check(["x"])


def test_each_rank_reports_its_host_and_the_names_outlive_the_store(agent_store, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    store = rendezvous.attempt_store(0, 2, 10.0)
    assert rendezvous.host_of(0) == socket.gethostname()
    assert rendezvous.host_of(1) == "?"  # not joined yet
    store.set("host/1", "node7")  # rank 1 joins
    rendezvous.learn_hosts(2)
    monkeypatch.setattr(rendezvous, "_attempt_store", None)  # the store died with rank 0
    assert rendezvous.host_of(1) == "node7"


def test_restarts_find_the_run_directory_of_the_first_attempt(agent_store, monkeypatch):
    assert rendezvous.claim_run_dir("/runs/first") == "/runs/first"
    _new_process(monkeypatch)
    assert rendezvous.claim_run_dir("/runs/second") == "/runs/first"


def test_without_a_shared_store_every_attempt_keeps_its_own_directory(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    assert rendezvous.claim_run_dir("/runs/mine") == "/runs/mine"
