"""Room events: the record a ``room_started`` opens, and what a ``room_finished`` closes."""

from __future__ import annotations

import json
from typing import Literal

from orchestrator.home_region import home_region, region_hint
from orchestrator.override import OVERRIDE_KEY, DispatchOverride, read_override
from orchestrator.records import RoomRecord, RoomState, RoomView
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.retire import remove_step, retire
from orchestrator.room.step import REST, Step
from orchestrator.transitions import note, transition
from shared.messages import RoomCreated, RoomEnded


def new_record(
    event: RoomCreated,
    ctx: Context,
    trace: dict[str, str | None],
    origin: str = "event",
    occupied: bool = False,
) -> RoomRecord:
    """The record of a room just announced, claimed by this replica (``received`` is in flight).
    ``origin``: ``event`` (a room event), or ``resync`` (found in LiveKit's room list, its event
    never having arrived); ``occupied``: a ghost room a caller has joined since."""
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
        origin=origin,
    )
    what = f"manual dispatch by {override.requested_by or 'an operator'}" if override else "room event"
    if origin == "resync":
        what = "found in LiveKit's room list; its room event never arrived"
    if occupied:
        what = "a caller joined the room our late CreateDispatch had made: it is a room to serve now"
    return note(
        record,
        now=ctx.now,
        event="reconciled" if origin == "resync" else "received",
        detail=f"{what} (sid {event.sid or '-'})",
        data={"region_hint": region_hint(event.region, event.metadata)},
    )


Incarnation = Literal["same", "newer", "older", "ghost"]


def incarnation(rec: RoomView, event: RoomCreated) -> Incarnation:
    """How a room event relates to the record of its name: the same LiveKit room, a newer room of
    that name, a late event of an older one, or the room our own CreateDispatch created when it
    raced the room's deletion (``ghost_sid``; never served on the strength of its event).

    Sids tell rooms apart; without one on either side the creation times do: an event without a
    sid is a new room only when it was created after the record's room (a live record) or after
    that room ended (an ended one). A different sid always is, unless its room is older.
    """
    created = event.created_at.timestamp() if event.created_at else None
    if event.sid is not None and event.sid == rec.ghost_sid:
        return "ghost"
    if event.sid is not None and rec.sid is not None:
        if event.sid == rec.sid:
            return "same"
        older = created is not None and rec.event_at is not None and created < rec.event_at
        return "older" if older else "newer"
    if created is None:
        return "same"
    if rec.event_at is not None and created < rec.event_at:
        return "older"
    if rec.terminal:
        if rec.reason == "room_gone" and rec.ghost_sid is None and rec.event_at is not None:
            # Ended because LiveKit no longer had the record's room (or listed another under the
            # name): a room created after the record's own is a newer one, even one created
            # before the end was written (a sid-less record learns no sid of the room that
            # replaced it; found by the simulator, seed 2006985).
            return "newer" if created > rec.event_at else "same"
        ended_at = rec.ended_at if rec.ended_at is not None else rec.received_at
        return "newer" if created > ended_at else "same"
    sidless = event.sid is None and rec.sid is None
    return "newer" if sidless and rec.event_at is not None and created > rec.event_at else "same"


def is_new_incarnation(rec: RoomRecord, event: RoomCreated, occupied: bool = False) -> bool:
    """Whether ``event`` starts the room over: a newer LiveKit room of this name (which supersedes
    a live record too: its old dispatch is retired first), our ghost room once a caller is in it
    (``occupied``: LiveKit put a user opening the name there), or an operator asking again, by
    hand, for a room that failed or ended (the outage case)."""
    override: DispatchOverride | None = read_override(event.metadata)
    manual = override is not None and override.manual
    kind = incarnation(rec, event)
    return kind == "newer" or (kind == "ghost" and occupied) or (rec.terminal and manual)


def wrongly_ended(rec: RoomRecord, event: RoomCreated, now: float, grace_s: float) -> bool:
    """The resync sees a room ``rec`` says ended (by a ``room_finished``): LiveKit, the truth about
    rooms, still lists it longer than ``grace_s`` after the end — a stale end (one without a sid,
    of an older room of the name) ended this one. It is served again."""
    if rec.state != RoomState.ENDED or rec.reason != "room_ended":
        return False
    if event.sid is None or (rec.sid is not None and rec.sid != event.sid) or rec.ghost_sid == event.sid:
        return False
    ended_at = rec.ended_at if rec.ended_at is not None else rec.received_at
    return ended_at < now - grace_s


def superseding(new: RoomRecord, old: RoomRecord) -> RoomRecord:
    """``new`` taking the place of ``old``: whatever of the old room's dispatches is not confirmed
    gone comes along, so its removal happens before the new room is placed."""
    pending = [e for e in retire(old).replaced if not e.removed]
    if old.terminal:
        return new.model_copy(update={"replaced": pending})
    return note(
        new.model_copy(update={"replaced": pending}),
        now=new.received_at,
        event="superseded",
        detail=f"replaces the live record of sid {old.sid or '-'} ({old.state.value}); "
        "its agent is removed first",
    )


def tombstone(event: RoomEnded, ctx: Context, published_at: float | None = None) -> RoomRecord:
    """The record of a room whose end arrived before its start (another replica, a backlog): kept
    so the late ``room_started`` is a duplicate, not a dispatch that would create the room again
    (CreateDispatch creates a missing room). It ended when its end was published (JetStream's
    stamp), not when it was read: a sid-less room of the name created after that is a newer one."""
    ended_at = min(published_at, ctx.now) if published_at is not None else ctx.now
    return transition(
        RoomRecord(room=event.room, sid=event.sid, received_at=ctx.now),
        RoomState.ENDED,
        now=ended_at,
        event="ended",
        detail="room ended before its start was seen",
        reason="room_ended",
    )


def decide_ended(rec: RoomRecord, event: RoomEnded, ctx: Context, published_at: float | None = None) -> Step:
    if event.sid and rec.sid and event.sid != rec.sid:
        return REST  # the end of an older incarnation of this room name
    if (
        event.sid is None
        and published_at is not None
        and rec.event_at is not None
        and published_at < rec.event_at
    ):
        return REST  # a sid-less end published before this room of the name was created
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
