"""What the resync's findings mean for a room: LiveKit no longer lists it, or its agent is gone.

The resync (:mod:`orchestrator.room.resync`) compares LiveKit's room list with the records; a
room it finds without a record goes the way of any room event (``intake.new_record``, origin
``resync``), and these two facts go through the reconciler's loop like any other.
"""

from __future__ import annotations

from orchestrator.records import RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.dispatch import gone
from orchestrator.room.decide.redispatch import redispatch
from orchestrator.room.facts import AgentLost, Vanished
from orchestrator.room.step import REST, Step

S = RoomState


def decide_vanished(rec: RoomRecord, fact: Vanished, ctx: Context) -> Step:
    """LiveKit's room list does not have this incarnation: its ``room_finished`` was lost."""
    if rec.terminal or (fact.sid is not None and fact.sid == rec.sid):
        return REST
    if rec.received_at > fact.listed_at - ctx.cfg.resync_grace_s:
        return REST  # too young to be missing from a list asked before (or just as) it was made
    if fact.sid is None:
        detail = "LiveKit no longer lists the room (its room_finished event never arrived)"
    else:
        detail = f"LiveKit lists this room name under another sid ({fact.sid}): this room is over"
    return Step(record=gone(rec, ctx, detail))


def decide_agent_lost(rec: RoomRecord, fact: AgentLost, ctx: Context) -> Step:
    """The agent left without a word (its job died, its report was lost): dispatch again, as for a
    ``left`` report. The pool is not excluded: its other workers may be fine."""
    if rec.state not in (S.JOINED, S.SPEAKING) or fact.identity != rec.identity:
        return REST
    if (rec.joined_at or rec.voice_at or 0.0) > fact.listed_at - ctx.cfg.resync_grace_s:
        return REST  # joined just now: the heartbeats may not list the job yet
    why = f"agent {fact.identity or '?'} is not in the room and no heartbeat of {rec.pool} lists its job"
    return redispatch(rec, ctx, "agent_lost", why, exclude=False)
