"""The store a job's ranks meet in, fresh for every torchrun attempt, and what the job keeps across attempts.

torchrun (2.x) hands every attempt of a job the same TCP store (its agent's), and `init_rpc` writes its
keys under a fixed prefix: a restarted or re-rendezvoused attempt would read the addresses of the dead
one and fail in gloo's connectFullMesh. Every attempt here gets a prefix of its own instead. Two things
deliberately live outside it, for the whole job: the run directory rank 0 chose, and each rank's host.
"""

from __future__ import annotations

import datetime
import os
import socket
from urllib.parse import parse_qs, urlparse

import torch.distributed as dist
from torch.distributed.rendezvous import register_rendezvous_handler

SCHEME = "a3c"
_attempt_store: dist.Store | None = None
_stores: dict[str, dist.Store] = {}
_hosts: dict[int, str] = {}


def restart_count() -> int:
    """Which attempt of the job this is (0 the first; torchrun counts failures, not membership changes)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def restarts_left() -> int:
    """How many more times torchrun (or `train.max_restarts`) will restart this job after a failure."""
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) - restart_count()


def agent_store_is_shared() -> bool:
    """True when every attempt of the job talks to the same store (torchrun's agent's, its default)."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def job_store(rank: int, world_size: int, timeout_s: float = 60.0, init_method: str = "env://") -> dist.Store:
    """The job's store (torchrun's, or a TCP store of our own, hosted by rank 0: `tcp://host:port`)."""
    if init_method not in _stores:
        timeout = datetime.timedelta(seconds=timeout_s)
        url = urlparse(init_method)
        if url.scheme == "tcp":  # torch's tcp:// handler makes every rank a client under torchrun: host it here
            _stores[init_method] = dist.TCPStore(
                url.hostname, url.port, world_size, is_master=rank == 0, timeout=timeout, multi_tenant=True
            )
        else:
            _stores[init_method], _, _ = next(dist.rendezvous(init_method, rank, world_size, timeout=timeout))
    return _stores[init_method]


def attempt_store(rank: int, world_size: int, timeout_s: float = 60.0, init_method: str = "env://") -> dist.Store:
    """The job's store under a prefix unique to this attempt, agreed on by all its ranks.

    torchrun's restart count tells failure restarts apart but not membership changes (a node joining), and
    the world size does not tell a re-join to the same size apart: so each rank also counts how often it
    has started with this (restart count, world size), and the ranks of one attempt all read the same count.
    """
    global _attempt_store
    if _attempt_store is None:
        store = job_store(rank, world_size, timeout_s, init_method)
        base = f"a3c/attempt{restart_count()}/world{world_size}"
        generation = store.add(f"{base}/starts/rank{rank}", 1)
        _attempt_store = dist.PrefixStore(f"{base}/gen{generation}", store)
        _attempt_store.set(f"host/{rank}", socket.gethostname())
    return _attempt_store


def learn_hosts(world_size: int) -> None:
    """Read every rank's host name once, after init_rpc (by then each has written it): a message about a
    lost rank must not depend on the store, which may have died with rank 0."""
    if _attempt_store is None:
        return
    try:
        names = _attempt_store.multi_get([f"host/{r}" for r in range(world_size)])
    except Exception:  # only names for messages: without them a message says '?'
        return
    _hosts.update({r: name.decode() for r, name in enumerate(names)})


def host_of(rank: int) -> str:
    """The host name rank `rank` reported when it joined this attempt ('?' if unknown)."""
    if rank in _hosts:
        return _hosts[rank]
    if _attempt_store is None:
        return "?"
    try:
        if not _attempt_store.check([f"host/{rank}"]):
            return "?"
        return _attempt_store.get(f"host/{rank}").decode()
    except Exception:  # the store may be gone with rank 0: the name is only for a message
        return "?"


def init_method() -> str:
    """What `init_rpc` should rendezvous with: the attempt store created by `attempt_store`."""
    return f"{SCHEME}://"


def _handler(url: str, **kwargs: object):
    if _attempt_store is None:
        raise RuntimeError("call rendezvous.attempt_store() before init_rpc")
    query = parse_qs(urlparse(url).query)
    yield _attempt_store, int(query["rank"][0]), int(query["world_size"][0])


register_rendezvous_handler(SCHEME, _handler)


def claim_run_dir(candidate: str) -> str:
    """The run directory of this torchrun job: the first attempt's rank 0 claims `candidate`, later
    attempts (restarts, membership changes) get the same directory back, so they resume from it.

    Only a store shared by every attempt remembers; otherwise each attempt keeps its own candidate.
    """
    if not agent_store_is_shared():
        return candidate
    store = job_store(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    return store.compare_set("a3c/run_dir", "", candidate).decode()
