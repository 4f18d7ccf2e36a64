"""`switchboard dispatch ROOM`: the manual dispatch the outage needed, through the normal path.

It publishes a RoomCreated on NATS — so the room is scheduled, traced, recorded and tracked like
any other — after checking that the room has no live record (no double agent). The LiveKit room's
sid and metadata are looked up when the room exists, so the event looks like the webhook's.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from livekit import api as lk
from nats.aio.client import Client as NATS

from orchestrator.ingest.translate import parse_room_metadata
from orchestrator.livekit_gateway import LiveKitGateway
from orchestrator.ops.rooms import get_room, is_live, room_store
from orchestrator.override import DispatchOverride, with_override
from orchestrator.records import RoomRecord, RoomState
from orchestrator.store import room_key
from shared import bus, subjects
from shared.messages import RoomCreated
from shared.settings import LiveKitSettings

log = logging.getLogger(__name__)

# States worth waiting for after publishing: the orchestrator has acted on the event.
_SETTLED = frozenset(
    {
        RoomState.DISPATCHED,
        RoomState.JOINED,
        RoomState.SPEAKING,
        RoomState.WAITING_FOR_POOL,
        RoomState.IGNORED,
        RoomState.FAILED,
        RoomState.ENDED,
    }
)


@dataclass(frozen=True, slots=True)
class LiveKitRoom:
    sid: str | None
    metadata: str


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    published: bool
    message: str
    record: RoomRecord | None = None


async def lookup_room(settings: LiveKitSettings, room: str) -> LiveKitRoom | None:
    """The room as LiveKit knows it now; None when it does not exist (CreateDispatch creates it)."""
    async with LiveKitGateway(settings) as gateway, asyncio.timeout(settings.request_timeout_s):
        listed = await gateway.api.room.list_rooms(lk.ListRoomsRequest(names=[room]))
    for r in listed.rooms:
        if r.name == room:
            return LiveKitRoom(r.sid or None, r.metadata)
    return None


async def manual_dispatch(
    nc: NATS,
    livekit: LiveKitSettings,
    room: str,
    *,
    agent: str | None = None,
    pool: str | None = None,
    region: str | None = None,
    wait_s: float = 15.0,
) -> DispatchOutcome:
    js = nc.jetstream()
    existing = await get_room(js, room)
    if existing is not None and is_live(existing):
        where = f" on pool {existing.pool}" if existing.pool else ""
        return DispatchOutcome(
            False,
            f"room {room} already has a live record: {existing.state.value}{where} "
            f"(attempt {existing.attempt}); not dispatching again. See: switchboard explain {room}",
            existing,
        )
    try:
        found = await lookup_room(livekit, room)
    except Exception as err:  # LiveKit down or credentials wrong: the orchestrator will say more
        log.warning("could not look the room up in LiveKit (%s); dispatching without its sid", err)
        found = None
    metadata, _ = parse_room_metadata(found.metadata if found else "")
    override = DispatchOverride(agent=agent, pool=pool, requested_by=_who(), reason="switchboard dispatch")
    event = RoomCreated(
        room=room,
        sid=found.sid if found else None,
        region=region,
        metadata=with_override(metadata, override),
        created_at=datetime.now(UTC),
    )
    await bus.ensure_streams(js)
    # A fresh message id: the room sid may already sit in the dedupe window (a failed room retried
    # by hand is exactly the case this command exists for); the orchestrator's record dedupes.
    await bus.publish(js, subjects.ROOM_CREATED, event, f"manual:{event.dedupe_id()}:{uuid.uuid4().hex}")
    record = await _await_settled(nc, room, existing, wait_s)
    if record is None:
        return DispatchOutcome(
            True, f"published RoomCreated for {room}; no orchestrator acted on it within {wait_s:.0f}s"
        )
    if existing is not None and record.received_at == existing.received_at:
        return DispatchOutcome(
            True,
            f"published RoomCreated for {room}, but its finished record ({existing.state.value}) was not "
            "restarted: this orchestrator build treats it as a duplicate",
            record,
        )
    where = f" to pool {record.pool}" if record.pool else ""
    return DispatchOutcome(
        True, f"room {room}: {record.state.value}{where} (attempt {record.attempt})", record
    )


async def _await_settled(nc: NATS, room: str, before: RoomRecord | None, wait_s: float) -> RoomRecord | None:
    store = await room_store(nc.jetstream())
    if store is None:
        return None
    latest = before
    try:
        async with asyncio.timeout(wait_s):
            watcher = await store.kv.watch(room_key(room))
            try:
                async for entry in watcher:
                    if entry is None or not entry.value:
                        continue
                    latest = RoomRecord.model_validate_json(entry.value)
                    fresh = before is None or latest.received_at != before.received_at
                    if fresh and latest.state in _SETTLED:
                        return latest
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
    except TimeoutError:
        pass
    return latest if latest is not before else None


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
