"""Free loopback ports for the servers the dev stack and the tests start.

A port is picked now and bound by a server a moment later. A port the kernel hands out for
``bind(0)`` comes from the ephemeral range, the same range outgoing connections draw from, so on a
busy machine a client socket could take it in between ("address already in use", seen in CI). So
the ports are drawn at random from below the ephemeral range, where the kernel never puts an
outgoing connection, and checked free by binding them once.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000
_TRIES = 200
_pick = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(kind: socket.SocketKind, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free(kind: socket.SocketKind) -> int:
    high = _ephemeral_low()
    if high - _LOWEST >= 1_000:
        for _ in range(_TRIES):
            port = _pick.randrange(_LOWEST, high)
            if _bindable(kind, port):
                return port
    # A machine whose ephemeral range starts low: fall back to the kernel's choice.
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    return _free(socket.SOCK_STREAM)


def free_udp_port() -> int:
    return _free(socket.SOCK_DGRAM)
