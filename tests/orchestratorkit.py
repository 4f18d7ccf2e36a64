"""Helpers for orchestrator tests against the real servers: an in-process replica, a stand-in
worker pool that beats and reports over real NATS, and waiting on a room's KV record."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from livekit import api as lkapi
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from devstack import orchestrator_process, standin_pool
from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.ops.watch import wait_for_room
from orchestrator.records import RoomRecord, RoomState
from orchestrator.service import OrchestratorService
from shared import bus, subjects
from shared.config import SwitchboardConfig, parse_config
from shared.dispatch_metadata import read_dispatch_metadata
from shared.messages import AgentStatus, RoomCreated
from shared.settings import LiveKitSettings, NatsSettings, Settings

AGENT = "ornina-avatar-agent"
# Rooms the tests create in LiveKit live this long empty (nobody ever joins most of them).
ROOM_EMPTY_TIMEOUT_S = 600
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
                # The session's livekit-server keeps other tests' rooms for minutes: the resync
                # (LiveKit's room list against the records) would serve them too. Off unless a
                # test is about it.
                "resync_interval_s": 0,
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


async def create_livekit_room(
    livekit: LiveKitServer | lkapi.LiveKitAPI,
    room: str,
    *,
    metadata: str = "",
    empty_timeout: int = ROOM_EMPTY_TIMEOUT_S,
) -> str:
    """CreateRoom in LiveKit, as a user's backend does before its room event (the orchestrator's
    CreateDispatch never creates a room); returns the room's sid. A room of that name LiveKit
    already has is returned as it is (LiveKit's CreateRoom answers the existing room)."""
    req = lkapi.CreateRoomRequest(name=room, metadata=metadata, empty_timeout=empty_timeout)
    if isinstance(livekit, lkapi.LiveKitAPI):
        made = await livekit.room.create_room(req)
    else:
        async with lkapi.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as api:
            made = await api.room.create_room(req)
    assert made.sid, f"CreateRoom {room}: no sid in {made}"
    return str(made.sid)


async def publish_created_room(
    js: JetStreamContext,
    livekit: LiveKitServer | lkapi.LiveKitAPI,
    event: RoomCreated,
    cell: subjects.Cell = subjects.SHARED,
) -> RoomCreated:
    """Create ``event.room`` in LiveKit, then publish its ``rooms.created`` with the room's sid (so
    its record knows the incarnation), the way a backend or the webhook ingest would. Returns the
    event as published."""
    sid = await create_livekit_room(livekit, event.room)
    published = event.model_copy(update={"sid": sid})
    await bus.publish_room_created(js, published, cell)
    return published


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
class FakePool(standin_pool.StandInPool):
    """Stands in for a pool's worker processes on the NATS side: devstack's heartbeating stand-in,
    beating every 0.1 s, plus the status reports a worker would send."""

    interval: float = 0.1
    agent: str = AGENT
    version: str = "test"
    # Where its reports go: the cell of the rooms it serves (a real worker reads it from the dispatch).
    cell: subjects.Cell = subjects.SHARED

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
            worker=self.worker,
            state=state,
            at=datetime.now(UTC),  # type: ignore[arg-type]
            identity=f"agent-{dispatch_id}",
            reason=reason,
        )
        await bus.publish_status(self.nc.jetstream(), status, self.cell)


async def wait_for_record(kv: KeyValue, room: str, states: set[RoomState], within: float = 15) -> RoomRecord:
    """Watch the room's KV key until its state is one of ``states`` (no polling)."""
    return await wait_until(
        kv, room, lambda r: r.state in states, f"state in {sorted(s.value for s in states)}", within
    )


async def wait_until(
    kv: KeyValue, room: str, predicate: Callable[[RoomRecord], bool], what: str, within: float = 15
) -> RoomRecord:
    """Watch the room's KV key until ``predicate(record)`` holds."""
    watched = await wait_for_room(kv, room, predicate, within)
    last = watched.record
    if not watched.reached or last is None:
        raise AssertionError(
            f"room {room}: not {what} after {within}s; "
            f"last: {last.state.value if last else None} {_timeline(last)}"
        )
    return last


def _timeline(record: RoomRecord | None) -> list[tuple[str, str]]:
    return [(h.event, h.detail) for h in record.history] if record else []


class OrchestratorProcess(orchestrator_process.OrchestratorProcess):
    """devstack's orchestrator subprocess on the session's livekit-server, with ``config`` written
    into ``workdir`` at start and JSON logs (tests read them with :meth:`log_text`)."""

    def __init__(
        self,
        workdir: Path,
        nats_url: str,
        livekit: LiveKitServer,
        config: SwitchboardConfig,
        extra_env: dict[str, str] | None = None,
        name: str = "orchestrator",
    ) -> None:
        super().__init__(
            workdir,
            workdir / f"{name}.yaml",
            nats_url,
            livekit.http_url,
            livekit.api_key,
            livekit.api_secret,
            name=name,
            log_format="json",
            extra_env=extra_env or {},
        )
        self.config = config

    def start(self, within: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
        super().start(within)
