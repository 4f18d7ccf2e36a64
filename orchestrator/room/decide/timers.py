"""Which timer of a room is due: the one function every caller asks (the sweep choosing rooms,
the reconciler deciding what a room needs next)."""

from __future__ import annotations

from orchestrator.records import HOLDING, IN_FLIGHT, RoomState, RoomView

S = RoomState


def leased_by_other(rec: RoomView, now: float, replica: str) -> bool:
    """Another replica is in the middle of this room's in-flight step and its claim still holds."""
    return rec.state in IN_FLIGHT and rec.owner not in (None, replica) and (rec.lease_until or 0.0) > now


def due(
    rec: RoomView,
    now: float,
    *,
    replica: str,
    pool_gone: bool,
    assign_check_s: float,
    worker_gone: bool = False,
) -> str | None:
    """Why ``rec`` needs work now, or None when it rests until a report, an event or its timer.

    ``pool_gone``: the pool holding the room's agent is dead or forgotten; ``worker_gone``: the
    worker whose beats listed the room's dispatch is dead while its pool lives on (the caller
    judges both from its registry; only holding rooms ask).
    """
    if leased_by_other(rec, now, replica):
        return None
    if rec.removal_pending:
        return "remove_replaced"
    if rec.terminal:
        return None
    if rec.state in IN_FLIGHT:
        return "resume"
    if rec.state == S.WAITING_FOR_POOL:
        return "place"
    if rec.state == S.WAITING_FOR_LIVEKIT:
        return "retry_livekit" if rec.deadline is None or rec.deadline <= now else None
    if rec.state in HOLDING:
        if rec.pool is not None and pool_gone:
            return "pool_dead"
        if worker_gone:
            return "worker_dead"
        if rec.deadline is not None and rec.deadline <= now:
            return {S.DISPATCHED: "join_timeout", S.JOINED: "no_voice"}.get(rec.state)
        if (
            rec.state == S.DISPATCHED
            and rec.assign_checked_at is None
            and rec.dispatch_id is not None
            and (rec.dispatched_at or now) + assign_check_s <= now
        ):
            return "check_assignment"
    return None


# Timer causes that end the current dispatch, and whether its pool is excluded from the next
# placement. A dead pool is not excluded: liveness already keeps rooms off it, and one that beats
# again is fit (excluding it failed rooms after a false death).
REDISPATCH_CAUSES: dict[str, bool] = {
    "pool_dead": False,
    "worker_dead": False,
    "join_timeout": True,
    "no_voice": True,
}
