"""Agent status reports: joined, voice, left, error — from the current dispatch or an older one."""

from __future__ import annotations

from typing import Any

from orchestrator.records import HOLDING, Replaced, RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.redispatch import redispatch
from orchestrator.room.decide.retire import remember
from orchestrator.room.step import REST, Step
from orchestrator.transitions import transition
from shared.messages import AgentStatus
from shared.subjects import pool_agent_name

S = RoomState


def _adopt(rec: RoomRecord, st: AgentStatus, ctx: Context) -> RoomRecord:
    """Our CreateDispatch landed but its answer was lost or is still on its way (slow or reset
    LiveKit): the agent of this very attempt reports first. Adopt its dispatch instead of evicting
    it; the dispatching step then finds it too."""
    return transition(
        rec,
        S.DISPATCHED,
        now=ctx.now,
        event="dispatched",
        detail="dispatch confirmed by its agent's report (CreateDispatch answer not seen)",
        data={"dispatch_id": st.dispatch_id, "pool": rec.pool},
        dispatch_id=st.dispatch_id,
        worker=st.worker,
        dispatched_at=ctx.now,
        deadline=ctx.now + ctx.cfg.join_deadline_s,
        owner=None,
        lease_until=None,
    )


def _unwanted(rec: RoomRecord, st: AgentStatus) -> Step:
    """A report from a dispatch the room does not want (replaced, duplicated, or the room is over):
    record its agent for removal; the removal runs next, whatever the room's state."""
    if st.state not in ("joined", "voice") or not st.identity:
        return REST
    # Even an agent already listed (from its job) and confirmed gone is removed again: it may have
    # joined after that confirmation, which is exactly what this report says it did.
    # The pool the report speaks for: only an agent of that pool may be removed on its word.
    agent_name = pool_agent_name(rec.agent, st.pool) if rec.agent else None
    entry = Replaced(
        dispatch_id=st.dispatch_id, attempt=st.attempt, agent_name=agent_name, identities=[st.identity]
    )
    return Step(record=remember(rec, entry))


def _join_phases(data: dict[str, Any], dispatched_at: float | None) -> str:
    """The worker's side of a join in words: where the time between dispatch and join went."""
    started, connected = data.get("started_at"), data.get("connected_at")
    parts = []
    if started is not None and dispatched_at is not None:
        parts.append(f"job began {started - dispatched_at:.2f} s after the dispatch (worker clock)")
    if started is not None and connected is not None:
        parts.append(f"room connected {connected - started:.2f} s after that")
    return f"; {', '.join(parts)}" if parts else ""


def decide_report(rec: RoomRecord, st: AgentStatus, ctx: Context, *, draining: bool = False) -> Step:
    if (
        rec.state == S.DISPATCHING
        and rec.dispatch_id is None
        and st.attempt == rec.attempt
        and st.pool == rec.pool
        and st.state in ("joined", "voice")
        and not any(e.dispatch_id == st.dispatch_id for e in rec.replaced)
    ):
        rec = _adopt(rec, st, ctx)
        adopted = True
    else:
        adopted = False
    if st.dispatch_id != rec.dispatch_id or rec.state not in HOLDING:
        return _unwanted(rec, st)
    if st.pool != rec.pool:
        # The current dispatch went to rec.pool: only its workers report on it (issue 17).
        return REST
    data: dict[str, Any] = {"worker": st.worker}
    if st.warnings:
        data["warnings"] = st.warnings
    if st.state == "joined" and rec.state == S.DISPATCHED:
        # The worker's side of the join (its clock), for the phases of a recovery in explain.
        for name, at in (("started_at", st.started_at), ("connected_at", st.connected_at)):
            if at is not None:
                data[name] = round(at.timestamp(), 3)
        new = transition(
            rec,
            S.JOINED,
            now=ctx.now,
            event="joined",
            detail=f"agent joined on {st.worker}{_join_phases(data, rec.dispatched_at)}",
            data=data,
            identity=st.identity,
            worker=st.worker,
            joined_at=ctx.now,
            deadline=ctx.now + ctx.cfg.voice_deadline_s,
        )
    elif st.state == "voice" and rec.state in (S.DISPATCHED, S.JOINED):
        new = transition(
            rec,
            S.SPEAKING,
            now=ctx.now,
            event="voice",
            detail="agent audio heard by a listener",
            data=data,
            identity=st.identity or rec.identity,
            worker=st.worker,
            voice_at=ctx.now,
            joined_at=rec.joined_at or ctx.now,
            deadline=None,
        )
    elif st.state == "left":
        # Whether the room is still there is learned by the removal that follows: a room LiveKit
        # no longer has ends instead of being placed again.
        # A draining worker's agents leave when its grace ends: the same hand-over, counted apart.
        return redispatch(rec, ctx, "drain" if draining else "left", st.reason, exclude=False)
    elif st.state == "error":
        return redispatch(rec, ctx, "agent_error", st.reason, exclude=True)
    else:
        # A repeated or out-of-order report (e.g. joined after voice): nothing changes.
        return Step(record=rec) if adopted else REST
    return Step(record=new)
