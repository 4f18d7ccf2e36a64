"""Ending the current dispatch of a room that still needs an agent: the one way into
``redispatching``. The old dispatch is retired in the same write, so the removal of its agent is
recorded before anything is done about it."""

from __future__ import annotations

from orchestrator.records import RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.retire import retire
from orchestrator.room.step import Step
from orchestrator.transitions import transition


def redispatch(rec: RoomRecord, ctx: Context, cause: str, why: str | None, *, exclude: bool) -> Step:
    excluded = (
        [*rec.excluded, rec.pool] if exclude and rec.pool and rec.pool not in rec.excluded else rec.excluded
    )
    new = transition(
        retire(rec),
        RoomState.REDISPATCHING,
        now=ctx.now,
        event="redispatch",
        detail=f"{cause}: {why}" if why else cause,
        data={"cause": cause, "pool": rec.pool},
        reason=cause,
        excluded=excluded,
        owner=ctx.replica,
        lease_until=ctx.now + ctx.lease_s,
        deadline=None,
    )
    return Step(record=new, cause=cause)
