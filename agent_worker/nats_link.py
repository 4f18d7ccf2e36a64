"""The worker's one NATS connection, which may come late: the worker serves LiveKit without it.

``shared.bus.connect`` bounds one start-up attempt; when it fails we log, wait and try again for as
long as the worker runs. Once connected, nats-py reconnects by itself after any outage.
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from shared import bus, subjects
from shared.settings import NatsSettings

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2.0
CLOSE_TIMEOUT_S = 3.0


class NatsLink:
    def __init__(self, settings: NatsSettings, name: str, cell: subjects.Cell = subjects.SHARED) -> None:
        self._settings = settings
        self._name = name
        self._cell = cell  # whose streams it makes sure of at start
        self._client: NATS | None = None
        self._ready = asyncio.Event()
        self.state = "connecting"
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def client(self) -> NATS | None:
        return self._client if self.connected else None

    async def jetstream(self) -> JetStreamContext:
        await self._ready.wait()
        assert self._client is not None
        return self._client.jetstream()

    async def wait_client(self) -> NATS:
        await self._ready.wait()
        assert self._client is not None
        return self._client

    async def run(self) -> None:
        """Connect (retrying without end), make sure the streams exist, then stay out of the way."""
        while self._client is None:
            try:
                client = await bus.connect(self._settings, self._name, on_state=self._on_state)
            except bus.NatsUnavailableError as exc:
                self.state, self.last_error = "unreachable", str(exc)
                log.warning("%s; serving LiveKit anyway and retrying in %.0fs", exc, RETRY_AFTER_S)
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            try:
                await bus.ensure_streams(client.jetstream(), self._settings.stream_replicas, self._cell)
            except Exception as exc:
                self.last_error = f"cannot ensure JetStream streams: {exc}"
                log.warning("%s; retrying in %.0fs", self.last_error, RETRY_AFTER_S)
                await client.close()
                await asyncio.sleep(RETRY_AFTER_S)
                continue
            self._client = client
            self.last_error = None
            self._ready.set()
            log.info("NATS connected; reports and heartbeats flow")

    async def _on_state(self, state: str) -> None:
        self.state = state

    async def aclose(self) -> None:
        if self._client is not None:
            await bus.close(self._client, CLOSE_TIMEOUT_S)
