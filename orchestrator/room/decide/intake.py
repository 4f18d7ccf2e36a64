"""Room events: the record a ``room_started`` opens, and what a ``room_finished`` closes."""

from __future__ import annotations

import json

from orchestrator.home_region import home_region, region_hint
from orchestrator.override import OVERRIDE_KEY, DispatchOverride, read_override
from orchestrator.records import RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.retire import remove_step, retire
from orchestrator.room.step import REST, Step
from orchestrator.transitions import note, transition
from shared.messages import RoomCreated, RoomEnded


def new_record(event: RoomCreated, ctx: Context, trace: dict[str, str | None]) -> RoomRecord:
    """The record of a room just announced, claimed by this replica (``received`` is in flight)."""
    override = read_override(event.metadata)
    user_meta = {k: v for k, v in event.metadata.items() if k != OVERRIDE_KEY} if event.metadata else None
    record = RoomRecord(
        room=event.room,
        sid=event.sid,
        home_region=home_region(event.region, event.metadata, ctx.topology),
        user_metadata=json.dumps(user_meta, separators=(",", ":")) if user_meta is not None else None,
        received_at=ctx.now,
        event_at=event.created_at.timestamp() if event.created_at else None,
        override_agent=override.agent if override else None,
        override_pool=override.pool if override else None,
        manual=bool(override and override.manual),
        owner=ctx.replica,
        lease_until=ctx.now + ctx.lease_s,
        traceparent=trace.get("traceparent"),
        tracestate=trace.get("tracestate"),
    )
    what = f"manual dispatch by {override.requested_by or 'an operator'}" if override else "room event"
    return note(
        record,
        now=ctx.now,
        event="received",
        detail=f"{what} (sid {event.sid or '-'})",
        data={"region_hint": region_hint(event.region, event.metadata)},
    )


def is_new_incarnation(rec: RoomRecord, event: RoomCreated) -> bool:
    """Same name, new LiveKit room (new sid) after the old one ended; or an operator asking again,
    by hand, for a room that failed or ended (the outage case)."""
    override: DispatchOverride | None = read_override(event.metadata)
    manual = override is not None and override.manual
    return rec.terminal and ((event.sid is not None and event.sid != rec.sid) or manual)


def tombstone(event: RoomEnded, ctx: Context) -> RoomRecord:
    """The record of a room whose end arrived before its start (another replica, a backlog): kept
    so the late ``room_started`` is a duplicate, not a dispatch that would create the room again
    (CreateDispatch creates a missing room)."""
    return transition(
        RoomRecord(room=event.room, sid=event.sid, received_at=ctx.now),
        RoomState.ENDED,
        now=ctx.now,
        event="ended",
        detail="room ended before its start was seen",
        reason="room_ended",
    )


def decide_ended(rec: RoomRecord, event: RoomEnded, ctx: Context) -> Step:
    if event.sid and rec.sid and event.sid != rec.sid:
        return REST  # the end of an older incarnation of this room name
    if rec.terminal:
        return remove_step(rec)  # a removal left pending by a crash is finished now
    ended = transition(
        retire(rec),
        RoomState.ENDED,
        now=ctx.now,
        event="ended",
        detail="room ended",
        reason="room_ended",
        deadline=None,
        owner=None,
        lease_until=None,
    )
    return Step(record=ended)
