"""Which network interface TensorPipe should listen on (it reads TP_SOCKET_IFNAME)."""

from __future__ import annotations

import fcntl
import socket
import struct

_SIOCGIFADDR = 0x8915


def _ipv4_of(ifname: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", ifname[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interface_for(master_addr: str) -> str | None:
    """The local interface that routes to `master_addr` (loopback for 127.x), or None if unknown.

    Connecting a UDP socket only asks the kernel for a route; no packet is sent.
    """
    try:
        ip = socket.gethostbyname(master_addr)
        if ip.startswith("127."):
            local_ip = "127.0.0.1"
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((ip, 9))
                local_ip = s.getsockname()[0]
    except OSError:
        return None
    for _, name in socket.if_nameindex():
        if _ipv4_of(name) == local_ip:
            return name
    return None
