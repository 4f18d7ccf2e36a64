"""Ports for the test servers come from below the ephemeral range, where no outgoing connection
can take them between the pick and the server's bind."""

from __future__ import annotations

import socket

import pytest

from devstack import ports


def test_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    low = ports._ephemeral_low()
    for pick, kind in ((ports.free_tcp_port, socket.SOCK_STREAM), (ports.free_udp_port, socket.SOCK_DGRAM)):
        port = pick()
        assert 10_000 <= port < low
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        draws = iter([busy, busy, 20_001])
        monkeypatch.setattr(ports._pick, "randrange", lambda _a, _b: next(draws))
        monkeypatch.setattr(ports, "_ephemeral_low", lambda: 32_768)
        assert ports.free_tcp_port() != busy
