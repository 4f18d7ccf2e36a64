"""Pure decisions: ``(record, fact, context) → Step``. No I/O, no clock, no randomness of their own.

:func:`decide` routes a fact to the decision that owns it; with no fact it says what the record
needs next (resume a lapsed claim, remove an old agent, place, dispatch, act on a due timer).
"""

from __future__ import annotations

from orchestrator.records import HOLDING, RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.dispatch import (
    decide_dispatch_outcome,
    decide_dispatching,
    decide_ghost_found,
    decide_room_gone,
    decide_waiting,
    resume,
)
from orchestrator.room.decide.intake import (
    decide_ended,
    incarnation,
    is_new_incarnation,
    new_record,
    superseding,
    tombstone,
    wrongly_ended,
)
from orchestrator.room.decide.place import PLACING, decide_place, needs_placement
from orchestrator.room.decide.redispatch import redispatch
from orchestrator.room.decide.reports import decide_report
from orchestrator.room.decide.resync import decide_agent_lost, decide_vanished
from orchestrator.room.decide.retire import decide_removal_done, decide_removal_failed, remove_step
from orchestrator.room.decide.timers import REDISPATCH_CAUSES, due, leased_by_other
from orchestrator.room.facts import (
    AgentLost,
    Claimed,
    DispatchFailed,
    DispatchLanded,
    Ended,
    Fact,
    GhostFound,
    JobsSeen,
    JobsUnknown,
    PlaceInput,
    RemovalDone,
    RemovalFailed,
    Report,
    RoomGone,
    Vanished,
)
from orchestrator.room.step import REST, CheckJobs, Step
from orchestrator.transitions import note

S = RoomState

__all__ = [
    "Context",
    "decide",
    "due",
    "incarnation",
    "is_new_incarnation",
    "leased_by_other",
    "needs_placement",
    "new_record",
    "superseding",
    "tombstone",
    "wrongly_ended",
]


def decide(
    rec: RoomRecord,
    fact: Fact | None,
    ctx: Context,
    *,
    pool_gone: bool,
    place: PlaceInput | None,
    worker_gone: bool = False,
) -> Step:
    """The next step for ``rec``. ``pool_gone`` / ``worker_gone``: the record's pool, or the worker
    that held its job, is dead or unknown to this replica (see :func:`due`); ``place``: the
    placement inputs, given when :func:`needs_placement` says so."""
    match fact:
        case Report(status, draining):
            return decide_report(rec, status, ctx, draining=draining)
        case Ended(event, published_at):
            return decide_ended(rec, event, ctx, published_at)
        case RemovalDone():
            return decide_removal_done(rec, fact, ctx)
        case RemovalFailed():
            return decide_removal_failed(rec, fact, ctx)
        case GhostFound():
            return decide_ghost_found(rec, fact, ctx)
        case DispatchLanded() | DispatchFailed():
            return decide_dispatch_outcome(rec, fact, ctx)
        case RoomGone():
            return decide_room_gone(rec, fact, ctx)
        case Vanished():
            return decide_vanished(rec, fact, ctx)
        case AgentLost():
            return decide_agent_lost(rec, fact, ctx)
        case JobsSeen() | JobsUnknown():
            return _decide_jobs(rec, fact, ctx)
    return _next(rec, fact, ctx, pool_gone=pool_gone, worker_gone=worker_gone, place=place)


def _next(
    rec: RoomRecord,
    claimed: Claimed | None,
    ctx: Context,
    *,
    pool_gone: bool,
    worker_gone: bool,
    place: PlaceInput | None,
) -> Step:
    if leased_by_other(rec, ctx.now, ctx.replica):
        return REST
    if rec.removal_pending:
        return remove_step(rec)
    if rec.terminal:
        return REST
    if rec.state in PLACING:
        return decide_place(rec, place, ctx) if place is not None else REST
    if rec.state == S.DISPATCHING:
        fresh = claimed is not None and claimed.key == rec.dispatch_key
        if not fresh and (rec.owner != ctx.replica or (rec.lease_until or 0.0) < ctx.now + ctx.lease_s / 2):
            return resume(rec, ctx)
        return decide_dispatching(rec, claimed, ctx)
    if rec.state == S.WAITING_FOR_LIVEKIT:
        return decide_waiting(rec, ctx)
    if rec.state in HOLDING:
        cause = due(
            rec,
            ctx.now,
            replica=ctx.replica,
            pool_gone=pool_gone,
            worker_gone=worker_gone,
            assign_check_s=ctx.cfg.assign_check_s,
        )
        if cause in REDISPATCH_CAUSES:
            assert cause is not None
            return redispatch(rec, ctx, cause, None, exclude=REDISPATCH_CAUSES[cause])
        if cause == "check_assignment" and rec.dispatch_id:
            return Step(effect=CheckJobs(rec.dispatch_id))
    return REST


def _decide_jobs(rec: RoomRecord, seen: JobsSeen | JobsUnknown, ctx: Context) -> Step:
    """LiveKit answers CreateDispatch with 200 even when it cannot give the job to any worker (all
    full in its view, assignment timed out) and never retries. A dispatch still without a job
    after ``assign_check_s`` is dead: dispatch again now, not at the join deadline."""
    if rec.state != S.DISPATCHED or rec.dispatch_id != seen.dispatch_id or rec.assign_checked_at is not None:
        return REST
    if isinstance(seen, JobsUnknown):
        return REST  # LiveKit did not answer: the sweep asks again
    if seen.jobs is None or seen.jobs > 0:
        detail = f"LiveKit gave the dispatch {seen.jobs} job(s)" if seen.jobs else "dispatch not listed"
        return Step(
            record=note(
                rec.model_copy(update={"assign_checked_at": ctx.now}),
                now=ctx.now,
                event="assigned",
                detail=detail,
            )
        )
    return redispatch(
        rec,
        ctx,
        "not_assigned",
        f"LiveKit gave the dispatch no job within {ctx.cfg.assign_check_s:g}s",
        exclude=False,
    )
