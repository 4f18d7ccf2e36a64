"""Health endpoints for supervisors: ``/health`` (alive and registered with LiveKit) and ``/ready``
(also taking jobs, i.e. not draining). Both return the worker's state as JSON, NATS included."""

from __future__ import annotations

from aiohttp import web

from agent_worker.worker_state import WorkerState


class HealthServer:
    def __init__(self, state: WorkerState, host: str, port: int) -> None:
        self._state = state
        self._host, self._port = host, port
        app = web.Application()
        app.add_routes([web.get("/health", self._health), web.get("/ready", self._ready)])
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        # Port 0 asks the kernel for a free one: several workers on one host never collide.
        self.port = int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        await self._runner.cleanup()

    async def _health(self, _: web.Request) -> web.Response:
        serving, details = self._state.health()
        return web.json_response(details, status=200 if serving else 503)

    async def _ready(self, _: web.Request) -> web.Response:
        serving, details = self._state.health()
        return web.json_response(details, status=200 if serving and not self._state.draining else 503)
