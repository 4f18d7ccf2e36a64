"""NATS over TLS: the NATS_TLS_* settings reach the connection (server verification, client
certificates), and a certificate problem fails the bounded start-up with the cause named."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from devstack.nats_server import NatsServer
from shared import bus
from shared.settings import NatsSettings


class Pki:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.server_cert, self.server_key = root / "server.pem", root / "server.key"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client = ca.issue_cert("switchboard-orchestrator")
        self.client_cert, self.client_key = root / "client.pem", root / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))
        self.other_ca_file = root / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(self.other_ca_file))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def _server(tmp_path: Path, pki: Pki, *, verify_clients: bool) -> Iterator[NatsServer]:
    tls = f'cert_file: "{pki.server_cert}", key_file: "{pki.server_key}"'
    if verify_clients:
        tls += f', ca_file: "{pki.ca_file}", verify: true'
    server = NatsServer(tmp_path / "nats-tls", extra_config=f"tls {{ {tls} }}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[NatsServer]:
    yield from _server(tmp_path, pki, verify_clients=False)


@pytest.fixture
def mtls_server(tmp_path: Path, pki: Pki) -> Iterator[NatsServer]:
    yield from _server(tmp_path, pki, verify_clients=True)


async def _round_trip(settings: NatsSettings) -> None:
    nc = await bus.connect(settings, "tls-test")
    try:
        sub = await nc.subscribe("switchboard.tls.check")
        await nc.publish("switchboard.tls.check", b"over tls")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"over tls"
    finally:
        await nc.close()


async def test_the_server_is_verified_against_the_configured_ca(tls_server: NatsServer, pki: Pki) -> None:
    await _round_trip(NatsSettings(url=tls_server.url, tls_ca_file=pki.ca_file))


async def test_an_untrusted_server_fails_start_up_naming_the_certificate(
    tls_server: NatsServer, pki: Pki
) -> None:
    settings = NatsSettings(url=tls_server.url, tls_ca_file=pki.other_ca_file, startup_attempts=1)
    with pytest.raises(bus.NatsUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        await bus.connect(settings, "tls-test")


async def test_client_certificates_are_presented_when_the_server_asks(
    mtls_server: NatsServer, pki: Pki
) -> None:
    await _round_trip(
        NatsSettings(
            url=mtls_server.url,
            tls_ca_file=pki.ca_file,
            tls_cert_file=pki.client_cert,
            tls_key_file=pki.client_key,
        )
    )
    # Without one the server refuses the connection.
    with pytest.raises(bus.NatsUnavailableError):
        await bus.connect(
            NatsSettings(url=mtls_server.url, tls_ca_file=pki.ca_file, startup_attempts=1), "tls-test"
        )
