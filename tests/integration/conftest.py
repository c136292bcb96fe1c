"""Fixtures of the integration tests that need more than loopback: two hosts made of network namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class Host:
    netns: str
    ifname: str
    addr: str

    def run(self, cmd: list) -> list:
        return ["ip", "netns", "exec", self.netns, *[str(c) for c in cmd]]


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {done.stderr.strip()}")


def netns_missing() -> str | None:
    """Why this machine cannot make network namespaces (not root, no iproute2, or the kernel or container
    refuses one), or None when it can: a probe namespace is made and removed."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` to make network namespaces"
    probe = f"a3cprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=20)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=20)
    return None if made.returncode == 0 else f"`ip netns add` is refused here: {made.stderr.strip()}"


@pytest.fixture
def namespaces_allowed() -> None:
    """Skips the test where network namespaces cannot be made at all (the test makes its own)."""
    missing = netns_missing()
    if missing is not None:
        pytest.skip(missing)


@pytest.fixture
def two_hosts(namespaces_allowed: None) -> Iterator[tuple[Host, Host]]:
    """Two hosts of this test's own: namespaces a3c<id>a/b, a veth pair between them, an address on each
    end and nothing else; all removed afterwards, also when the test fails. Skips only where namespaces
    cannot be made at all; a set-up step that fails after that is a failure."""
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    hosts = (Host(f"a3c{tag}a", f"va{tag}", f"{subnet}.1"), Host(f"a3c{tag}b", f"vb{tag}", f"{subnet}.2"))
    try:
        for h in hosts:
            _ip("netns", "add", h.netns)
        _ip("link", "add", hosts[0].ifname, "type", "veth", "peer", "name", hosts[1].ifname)
        for h in hosts:
            _ip("link", "set", h.ifname, "netns", h.netns)
            _ip("-n", h.netns, "addr", "add", f"{h.addr}/24", "dev", h.ifname)
            _ip("-n", h.netns, "link", "set", h.ifname, "up")
            _ip("-n", h.netns, "link", "set", "lo", "up")
        yield hosts
    finally:
        for h in hosts:  # deleting a namespace kills nothing: the jobs fixture has killed the agents already
            subprocess.run(["ip", "netns", "del", h.netns], capture_output=True, timeout=20)


def set_link(host: Host, up: bool) -> None:
    """Bring `host`'s end of the veth up or down: a partition (no FIN, no RST: packets just stop)."""
    _ip("-n", host.netns, "link", "set", host.ifname, "up" if up else "down")


@pytest.fixture
def link() -> object:
    """`link(host, up)`: bring a host's end of the veth pair up or down (see `set_link`)."""
    return set_link
