"""Helpers for orchestrator tests against the real servers: an in-process replica, a stand-in
worker pool that beats and reports over real NATS, and waiting on a room's KV record."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from orchestrator.devstack.livekit_server import LiveKitServer
from orchestrator.devstack.nats_server import NatsServer
from orchestrator.devstack.ports import free_tcp_port
from orchestrator.devstack.process import ServerProcess
from orchestrator.records import RoomRecord, RoomState
from orchestrator.service import OrchestratorService
from orchestrator.store import room_key
from shared import bus, subjects
from shared.codec import encode
from shared.config import SwitchboardConfig, parse_config
from shared.dispatch_metadata import read_dispatch_metadata
from shared.messages import AgentStatus, PoolHeartbeat
from shared.settings import LiveKitSettings, NatsSettings, Settings

AGENT = "ornina-avatar-agent"
_tracer = trace.get_tracer("tests.fakepool")


def make_config(**orchestrator: object) -> SwitchboardConfig:
    return parse_config(
        {
            "default_region": "eu-central",
            "regions": {"eu-central": {"neighbours": ["us-east"]}, "us-east": {"neighbours": ["eu-central"]}},
            "rules": [{"name": "ornina", "match": "ornina-*", "agent": AGENT, "priority": 10}],
            "orchestrator": {
                "heartbeat_interval_s": 0.2,
                "dead_after_missed_beats": 3,
                "join_deadline_s": 5,
                "voice_deadline_s": 5,
                "dispatch_deadline_s": 3,
                "sweep_interval_s": 0.1,
                "seed": 7,
                # Stand-in pools have no LiveKit worker, so LiveKit never gives their dispatches a
                # job: keep the assignment check out of the way unless a test is about it.
                "assign_check_s": 120,
                **orchestrator,
            },
        }
    )


def make_settings(nats_server: NatsServer, livekit: LiveKitServer, secret: str | None = None) -> Settings:
    return Settings(
        nats=NatsSettings(url=nats_server.url, startup_attempts=2),
        livekit=LiveKitSettings(
            url=livekit.http_url,
            api_key=livekit.api_key,
            api_secret=secret or livekit.api_secret,
            request_timeout_s=2.0,
        ),
    )


@contextlib.asynccontextmanager
async def running_orchestrator(
    settings: Settings, config: SwitchboardConfig
) -> AsyncIterator[OrchestratorService]:
    service = OrchestratorService(settings, config)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            while not service.readiness.index_synced or not service.readiness.consumers_bound:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield service
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 15)


@dataclass
class FakePool:
    """Stands in for a pool's worker processes on the NATS side (heartbeats, status reports)."""

    nc: NATS
    pool: str
    region: str
    capacity: int = 4
    active: int = 0
    jobs: list[str] = field(default_factory=list)
    draining: bool = False
    interval: float = 0.1
    _task: asyncio.Task[None] | None = None
    _seq: int = 0

    @property
    def agent_name(self) -> str:
        return subjects.pool_agent_name(AGENT, self.pool)

    async def beat(self) -> None:
        self._seq += 1
        hb = PoolHeartbeat(
            pool=self.pool,
            agent=AGENT,
            region=self.region,
            agent_name=self.agent_name,
            worker=f"{self.pool}-w1",
            capacity=self.capacity,
            active=self.active,
            load=min(1.0, self.active / self.capacity) if self.capacity else 1.0,
            draining=self.draining,
            version="test",
            seq=self._seq,
            at=datetime.now(UTC),
            jobs=list(self.jobs),
        )
        await self.nc.publish(subjects.pool_heartbeat(self.pool), encode(hb))

    async def _loop(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        await self.beat()
        await self.nc.flush()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop beating, as a SIGKILLed pool would."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def report(
        self,
        room: str,
        dispatch_id: str,
        attempt: int,
        state: str,
        reason: str | None = None,
        dispatch_metadata: str | None = None,
    ) -> None:
        """Publish a status; with ``dispatch_metadata``, inside a job span continued from it (as the
        real worker does), so the report joins the room's trace."""
        parent = read_dispatch_metadata(dispatch_metadata).trace_context() if dispatch_metadata else None
        with _tracer.start_as_current_span("agent job", context=parent, kind=SpanKind.CONSUMER):
            await self._report(room, dispatch_id, attempt, state, reason)

    async def _report(
        self, room: str, dispatch_id: str, attempt: int, state: str, reason: str | None
    ) -> None:
        status = AgentStatus(
            room=room,
            dispatch_id=dispatch_id,
            attempt=attempt,
            pool=self.pool,
            worker=f"{self.pool}-w1",
            state=state,
            at=datetime.now(UTC),  # type: ignore[arg-type]
            identity=f"agent-{dispatch_id}",
            reason=reason,
        )
        await bus.publish_status(self.nc.jetstream(), status)


async def wait_for_record(kv: KeyValue, room: str, states: set[RoomState], within: float = 15) -> RoomRecord:
    """Watch the room's KV key until its state is one of ``states`` (no polling)."""
    return await wait_until(
        kv, room, lambda r: r.state in states, f"state in {sorted(s.value for s in states)}", within
    )


async def wait_until(
    kv: KeyValue, room: str, predicate: Callable[[RoomRecord], bool], what: str, within: float = 15
) -> RoomRecord:
    """Watch the room's KV key until ``predicate(record)`` holds."""
    watcher = await kv.watch(room_key(room))
    last: RoomRecord | None = None
    try:
        async with asyncio.timeout(within):
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                last = RoomRecord.model_validate_json(entry.value)
                if predicate(last):
                    return last
    except TimeoutError:
        raise AssertionError(
            f"room {room}: not {what} after {within}s; "
            f"last: {last.state.value if last else None} {_timeline(last)}"
        ) from None
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    raise AssertionError("watch ended")


def _timeline(record: RoomRecord | None) -> list[tuple[str, str]]:
    return [(h.event, h.detail) for h in record.history] if record else []


@dataclass
class OrchestratorProcess:
    """`switchboard orchestrator` as a real subprocess (its own process group), ready when /readyz is 200."""

    workdir: Path
    nats_url: str
    livekit: LiveKitServer
    config: SwitchboardConfig
    extra_env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_tcp_port)
    name: str = "orchestrator"
    process: ServerProcess | None = None

    def start(self, within: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / f"{self.name}.yaml"
        config_path.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
        env = {
            "NATS_URL": self.nats_url,
            "NATS_STARTUP_ATTEMPTS": "3",
            "LIVEKIT_URL": self.livekit.http_url,
            "LIVEKIT_API_KEY": self.livekit.api_key,
            "LIVEKIT_API_SECRET": self.livekit.api_secret,
            "SWITCHBOARD_CONFIG": str(config_path),
            "SWITCHBOARD_HTTP_PORT": str(self.http_port),
            "SWITCHBOARD_LOG_FORMAT": "json",
            **self.extra_env,
        }
        argv = [str(Path(sys.executable).parent / "switchboard"), "orchestrator"]
        self.process = ServerProcess(self.name, argv, self.workdir / f"{self.name}.log", env=env)
        self.process.start()
        self.process.wait_ready(lambda: self.probe("/readyz")[0] == 200, within)

    def probe(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=1) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()
        except (urllib.error.URLError, OSError):
            return 0, ""

    def log_text(self) -> str:
        return (self.workdir / f"{self.name}.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process:
            self.process.stop(timeout=15)

    def kill(self) -> None:
        if self.process:
            self.process.kill()
