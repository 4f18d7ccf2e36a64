"""Fixtures that start the real servers on loopback: nats-server and livekit-server.

A missing binary fails the test with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from devstack.process import MissingBinaryError, start_with_fresh_ports

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session", autouse=True)
def _tracer_provider() -> None:
    # The global provider can be set once per process: one for the session, cleared per test.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    try:
        server = start_with_fresh_ports(lambda n: NatsServer(tmp_path / f"nats-{n}"))
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    """One livekit-server for the session (tests use distinct room names); tests that need their
    own configuration (webhooks, faults) start a LiveKitServer of their own."""
    root = tmp_path_factory.mktemp("livekit")
    try:
        server = start_with_fresh_ports(lambda n: LiveKitServer(root / str(n)))
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=1, connect_timeout=2)
    yield client
    await client.close()


@pytest.fixture
async def livekit_api(livekit_server: LiveKitServer) -> AsyncIterator[lkapi.LiveKitAPI]:
    client = lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret)
    yield client
    await client.aclose()
