"""`switchboard dispatch ROOM`: the manual dispatch the outage needed, through the normal path.

It publishes a RoomCreated on NATS — so the room is scheduled, traced, recorded and tracked like
any other — after checking that the room has no live record (no double agent). The LiveKit room's
sid and metadata are looked up when the room exists, so the event looks like the webhook's, and its
region is the room's region hint as the controller reads it (``--region``, else the metadata's
``region``: :func:`orchestrator.home_region.region_hint`).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from livekit import api as lk
from nats.aio.client import Client as NATS

from orchestrator.home_region import region_hint
from orchestrator.ingest.translate import parse_room_metadata
from orchestrator.livekit_gateway import LiveKitGateway
from orchestrator.ops.rooms import get_room, is_live, room_store
from orchestrator.ops.watch import wait_for_room
from orchestrator.override import DispatchOverride, with_override
from orchestrator.records import RoomRecord, RoomState
from shared import bus, subjects
from shared.messages import REGION_PATTERN, RoomCreated
from shared.settings import LiveKitSettings

log = logging.getLogger(__name__)

# States worth waiting for after publishing: the orchestrator has acted on the event.
_SETTLED = frozenset(
    {
        RoomState.DISPATCHED,
        RoomState.JOINED,
        RoomState.SPEAKING,
        RoomState.WAITING_FOR_POOL,
        RoomState.WAITING_FOR_LIVEKIT,
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


def manual_event(
    room: str, found: LiveKitRoom | None, override: DispatchOverride, region: str | None = None
) -> RoomCreated:
    """The RoomCreated a manual dispatch publishes: the room as LiveKit lists it (``found``), the
    override in its metadata, and the region the controller would read from it — ``region`` when
    the operator gave one, else the room metadata's."""
    metadata, _ = parse_room_metadata(found.metadata if found else "")
    return RoomCreated(
        room=room,
        sid=found.sid if found else None,
        region=region_hint(region, metadata),
        metadata=with_override(metadata, override),
        created_at=datetime.now(UTC),
    )


async def manual_dispatch(
    nc: NATS,
    livekit: LiveKitSettings,
    room: str,
    *,
    agent: str | None = None,
    pool: str | None = None,
    region: str | None = None,
    wait_s: float = 15.0,
    cell: subjects.Cell = subjects.SHARED,
    look_in: Sequence[subjects.Cell] = (subjects.SHARED,),
) -> DispatchOutcome:
    """Publish the manual dispatch into ``cell``, unless a live record of the room is in one of
    ``look_in`` (every region's cell, with per-region state)."""
    if region is not None and not re.fullmatch(REGION_PATTERN, region):
        return DispatchOutcome(
            False, f"region {region!r} is not a region name (lower-case letters, digits and '-')"
        )
    js = nc.jetstream()
    existing = await get_room(js, room, look_in)
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
    override = DispatchOverride(agent=agent, pool=pool, requested_by=_who(), reason="switchboard dispatch")
    event = manual_event(room, found, override, region)
    await bus.ensure_streams(js, cell=cell)
    # A fresh message id: the room sid may already sit in the dedupe window (a failed room retried
    # by hand is exactly the case this command exists for); the orchestrator's record dedupes.
    await bus.publish_manual_dispatch(js, event, f"manual:{event.dedupe_id()}:{uuid.uuid4().hex}", cell)
    record = await _await_settled(nc, room, existing, wait_s, cell)
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


async def _await_settled(
    nc: NATS, room: str, before: RoomRecord | None, wait_s: float, cell: subjects.Cell
) -> RoomRecord | None:
    store = await room_store(nc.jetstream(), cell)
    if store is None:
        return None

    def settled(record: RoomRecord) -> bool:
        fresh = before is None or record.received_at != before.received_at
        return fresh and record.state in _SETTLED

    return (await wait_for_room(store.kv, room, settled, wait_s)).record


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
