"""`switchboard ingest` as an object: NATS connection, streams, the HTTP site, a clean stop.

Used by the CLI, by `switchboard dev` and by the tests, so all three run the same code. The webhook
port faces LiveKit (often the internet) and serves only the webhook, /healthz and /readyz; the
metrics are on the internal probe port (``SWITCHBOARD_HTTP_HOST``/``_PORT``), as for the orchestrator.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from aiohttp import web
from nats.aio.client import Client as NATS
from opentelemetry import metrics
from prometheus_client import CollectorRegistry

from orchestrator.ingest.app import IngestOptions, Unavailable, build_app, webhook_counter
from orchestrator.ingest.connections import CappedRunner
from shared import bus
from shared.config import SwitchboardConfig
from shared.messages import RoomCreated, RoomEnded
from shared.probes import ProbeServer
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class IngestServer:
    settings: Settings
    config: SwitchboardConfig
    host: str | None = None  # None: config.ingest.host
    port: int | None = None  # None: config.ingest.port; 0: a free port (see bound_port)
    prometheus: CollectorRegistry | None = None  # None: no probe port (tests that need none)
    bound_port: int = 0
    probe_port: int = 0
    _nc: NATS | None = None
    _runner: web.AppRunner | None = None
    _probes: ProbeServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host or self.config.ingest.host}:{self.bound_port}{self.config.ingest.path}"

    async def start(self) -> None:
        cfg = self.config.ingest
        cell = self.config.cell(self.settings.region)
        # Bounded connect: an ingest that cannot reach NATS at start says so and exits.
        self._nc = await bus.connect(self.settings.nats, "switchboard-ingest")
        # Publishing into a missing stream would fail every webhook until the orchestrator starts.
        await bus.ensure_streams(self._nc.jetstream(), self.settings.nats.stream_replicas, cell)
        options = IngestOptions(
            api_key=self.settings.livekit.api_key,
            api_secret=self.settings.livekit.api_secret.get_secret_value(),
            # An ingest of a region hears its region's LiveKit node: its rooms are homed there.
            default_region=cfg.region or self.settings.region or self.config.default_region,
            path=cfg.path,
            max_body_bytes=cfg.max_body_bytes,
            publish_timeout_s=cfg.publish_timeout_s,
            body_read_timeout_s=cfg.body_read_timeout_s,
        )
        count = webhook_counter(metrics.get_meter("switchboard.ingest"))
        app = build_app(options, self._publish, self._connected, count)
        # keepalive_timeout also bounds a new connection's wait for its first request head (aiohttp
        # closes a connection still waiting for one when it runs out): a slow-loris client is cut off.
        self._runner = CappedRunner(
            app,
            max_connections=cfg.max_connections,
            max_per_client=cfg.max_connections_per_client,
            on_refused=lambda why: count("refused", why),
            access_log=None,
            keepalive_timeout=cfg.idle_timeout_s,
        )
        await self._runner.setup()
        host = self.host or cfg.host
        site = web.TCPSite(self._runner, host, cfg.port if self.port is None else self.port)
        await site.start()
        self.bound_port = int(self._runner.addresses[0][1])
        log.info("ingest listening on %s (webhook path %s)", f"http://{host}:{self.bound_port}", cfg.path)
        if self.prometheus is not None:
            http = self.settings
            self._probes = ProbeServer(self._ready, self.prometheus, http.http_host, http.http_port)
            await self._probes.start()
            self.probe_port = self._probes.port
            log.info("probes on http://%s:%d (/healthz /readyz /metrics)", http.http_host, self.probe_port)

    def _ready(self) -> tuple[bool, dict[str, object]]:
        return self._connected(), {"nats": "connected" if self._connected() else "unavailable"}

    def _connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _publish(self, message: RoomCreated | RoomEnded) -> None:
        if self._nc is None:
            raise Unavailable("not started")
        js = self._nc.jetstream()
        cell = self.config.cell(self.settings.region)
        if isinstance(message, RoomCreated):
            await bus.publish_room_created(js, message, cell)
        else:
            await bus.publish_room_ended(js, message, cell)

    async def stop(self) -> None:
        if self._probes is not None:
            await self._probes.stop()
            self._probes = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._nc is not None:
            await bus.close(self._nc)
            self._nc = None


async def run_until_signalled(server: IngestServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
