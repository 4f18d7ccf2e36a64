"""Placement: rule → attempt budget → scheduler → the claim (``dispatching``) or a wait.

Pure: the pools and reservations come in as :class:`PlaceInput`; the claim written here is what
makes one replica, and one only, dispatch the attempt.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.records import RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.retire import retire
from orchestrator.room.decide.timers import leased_by_other
from orchestrator.room.facts import Claimed, PlaceInput
from orchestrator.room.step import REST, Step
from orchestrator.rules import match_rule
from orchestrator.scheduler import Decision, ScheduleRequest, schedule
from orchestrator.transitions import note, transition
from shared.dispatch_metadata import attempt_key
from shared.subjects import pool_agent_name

S = RoomState
PLACING = frozenset({S.RECEIVED, S.REDISPATCHING, S.WAITING_FOR_POOL})


def needs_placement(rec: RoomRecord, now: float, replica: str) -> bool:
    """The room waits for a pool choice and nothing else stands in the way (a claim held by
    another replica, an old agent not confirmed gone)."""
    return rec.state in PLACING and not rec.removal_pending and not leased_by_other(rec, now, replica)


def _fail(rec: RoomRecord, ctx: Context, event: str, detail: str, reason: str) -> Step:
    # A terminal record carries no claim and no timer; a dispatch that may exist is retired.
    return Step(
        record=transition(
            retire(rec),
            S.FAILED if reason != "no_rule" else S.IGNORED,
            now=ctx.now,
            event=event,
            detail=detail,
            reason=reason,
            owner=None,
            lease_until=None,
            deadline=None,
        )
    )


def _with_rule(rec: RoomRecord, ctx: Context) -> RoomRecord | Step:
    """The record with its rule and agent settled, or the step that ignores the room."""
    if rec.rule is not None:
        return rec
    if rec.override_agent:
        return note(
            rec.model_copy(
                update={
                    "rule": "manual",
                    "agent": rec.override_agent,
                    "home_region": ctx.topology.home_for(rec.home_region),
                }
            ),
            now=ctx.now,
            event="rule",
            detail=f"manual dispatch: agent {rec.override_agent!r} (no rule needed)",
        )
    match = match_rule(rec.room, ctx.config.rules)
    if match.rule is None:
        return _fail(rec, ctx, "rule", match.reason, "no_rule")
    # home_region is resolved on receipt; resolving it again here is a no-op for those records
    # and keeps records from older builds (the raw hint) right.
    return note(
        rec.model_copy(
            update={
                "rule": match.rule.name,
                "agent": match.rule.agent,
                "home_region": ctx.topology.home_for(rec.home_region),
            }
        ),
        now=ctx.now,
        event="rule",
        detail=match.reason,
    )


def _choose(rec: RoomRecord, place: PlaceInput, ctx: Context) -> tuple[Decision, str]:
    assert rec.agent is not None and rec.home_region is not None
    pools = place.pools
    if rec.override_pool and rec.attempt == 0:
        # A pinned manual dispatch decides the first placement; failover is normal.
        pools = [p for p in pools if p.pool == rec.override_pool]
    request = ScheduleRequest(room=rec.room, agent=rec.agent, region=rec.home_region)

    def run(excluded: list[str]) -> Decision:
        return schedule(
            replace(request, excluded=frozenset(excluded)),
            pools,
            place.reserved,
            ctx.topology,
            seed=place.seed,
            strategy=ctx.cfg.strategy,
        )

    decision = run(rec.excluded)
    if decision.pool is None and rec.excluded and (again := run([])).pool is not None:
        # Every pool that could take the room has failed it once. Under a burst that means slow
        # (its agents queue to connect), not broken: try the best of them again rather than fail
        # with attempts left (max_attempts bounds it). Seen in the 200-room drills.
        return again, (
            f"every fit pool had failed this room once ({', '.join(rec.excluded)}); "
            f"attempt {rec.attempt + 1} of {ctx.cfg.max_attempts} tries again: {again.reason}"
        )
    return decision, decision.reason


def decide_place(rec: RoomRecord, place: PlaceInput, ctx: Context) -> Step:
    if not needs_placement(rec, ctx.now, ctx.replica):
        return REST
    ruled = _with_rule(rec, ctx)
    if isinstance(ruled, Step):
        return ruled
    rec = ruled
    if rec.attempt >= ctx.cfg.max_attempts:
        return _fail(
            rec, ctx, "failed", f"gave up after {rec.attempt} attempts (last: {rec.reason})", "max_attempts"
        )
    decision, detail = _choose(rec, place, ctx)
    if decision.pool is None:
        if rec.state == S.WAITING_FOR_POOL:
            if rec.deadline is not None and rec.deadline <= ctx.now:
                return replace(_fail(rec, ctx, "failed", decision.reason, "no_pool"), decision=decision)
            return Step(decision=decision)  # still waiting; the sweep tries again
        new = transition(
            rec,
            S.WAITING_FOR_POOL,
            now=ctx.now,
            event="decision",
            detail=decision.reason,
            data=decision.to_dict(),
            deadline=ctx.now + ctx.cfg.no_pool_deadline_s,
            owner=None,
            lease_until=None,
        )
        return Step(record=new, decision=decision)
    attempt = rec.attempt + 1
    key = attempt_key(rec.room, attempt, rec.sid)
    new = transition(
        rec,
        S.DISPATCHING,
        now=ctx.now,
        event="decision",
        detail=detail,
        data=decision.to_dict(),
        attempt=attempt,
        pool=decision.pool,
        agent_name=pool_agent_name(rec.agent or "", decision.pool),
        dispatch_id=None,
        identity=None,
        dispatch_key=key,
        assign_checked_at=None,
        owner=ctx.replica,
        lease_until=ctx.now + ctx.lease_s,
        deadline=None,
    )
    return Step(record=new, then=Claimed(key), decision=decision, hold=decision.pool)
