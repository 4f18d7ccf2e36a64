"""The HTTP surface every process shows its supervisor: ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz``: the process runs and can serve (200; a caller may add its own check, e.g. the worker:
registered with LiveKit). ``/readyz``: 200 only when the process can do its job
(the caller's check says what that means), 503 with the reasons otherwise. ``/metrics``: the
Prometheus text format of the process's OpenTelemetry metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

ReadyCheck = Callable[[], tuple[bool, Mapping[str, object]]]

HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"
# What supervisors may probe (deploy files are checked against these).
PATHS = (HEALTHZ, READYZ, METRICS)


class ProbeServer:
    def __init__(
        self,
        ready: ReadyCheck,
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        alive: ReadyCheck | None = None,
    ) -> None:
        self._ready = ready
        self._alive = alive
        self._registry = registry
        self._host, self._port = host, port
        app = web.Application()
        app.add_routes(
            [
                web.get(HEALTHZ, self._healthz),
                web.get(READYZ, self._readyz),
                web.get(METRICS, self._metrics),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        # Port 0 asks the kernel: several processes on one host never collide.
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> ProbeServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _healthz(self, _: web.Request) -> web.Response:
        if self._alive is None:
            return web.json_response({"status": "ok"})
        ok, details = self._alive()
        return web.json_response({"alive": ok, **details}, status=200 if ok else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, details = self._ready()
        return web.json_response({"ready": ok, **details}, status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
