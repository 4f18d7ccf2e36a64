"""When a room next needs a look by the clock alone: the rule the room index keeps its wake-up heap
by (it lives outside :mod:`orchestrator.room`, which imports the index)."""

from __future__ import annotations

from orchestrator.records import HOLDING, IN_FLIGHT, RoomState, RoomView

S = RoomState


def wake_at(rec: RoomView, *, assign_check_s: float) -> float | None:
    """When ``rec`` next needs a look with nothing else happening: the time-driven half of
    ``orchestrator.room.decide.due`` (pool and worker deaths are the other half; they come from
    the registry, not the clock). ``0.0``: now, and again on every sweep until the record changes
    (a step in flight, a room waiting for a pool, a pending removal: ``due`` decides, with the
    claim and the pools). None: only an event, a report or a death moves it. Never later than
    ``due`` would say (tests/unit/test_wake.py)."""
    if rec.removal_pending:
        return 0.0
    if rec.terminal:
        return None
    if rec.state in IN_FLIGHT or rec.state == S.WAITING_FOR_POOL:
        return 0.0
    if rec.state == S.WAITING_FOR_LIVEKIT:
        return rec.deadline if rec.deadline is not None else 0.0
    if rec.state in HOLDING:
        times = [rec.deadline] if rec.deadline is not None else []
        if rec.state == S.DISPATCHED and rec.assign_checked_at is None and rec.dispatch_id is not None:
            times.append((rec.dispatched_at or 0.0) + assign_check_s)
        return min(times) if times else None
    return None
