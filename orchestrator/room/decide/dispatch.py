"""The ``dispatching`` step: what to ask LiveKit, and what its answer means for the record."""

from __future__ import annotations

from typing import Any

from orchestrator.records import Replaced, RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.retire import remember, remove_step, retire
from orchestrator.room.facts import Claimed, DispatchFailed, DispatchLanded
from orchestrator.room.step import REST, EnsureDispatch, Step
from orchestrator.transitions import note, transition

S = RoomState


def decide_dispatching(rec: RoomRecord, claimed: Claimed | None, ctx: Context) -> Step:
    """Ensure the attempt's dispatch. Only the call that wrote the claim may create blind: any
    other (a resumed step, this replica's own after a lost write) looks first, because an earlier
    CreateDispatch may have landed without its answer or its record being seen."""
    if rec.state != S.DISPATCHING or rec.dispatch_key is None:
        return REST
    fresh = claimed is not None and claimed.key == rec.dispatch_key and rec.owner == ctx.replica
    return Step(effect=EnsureDispatch(rec.dispatch_key, look_first=not fresh))


def resume(rec: RoomRecord, ctx: Context) -> Step:
    """Take over an in-flight step whose claim lapsed (or was never held): claim it, then look."""
    new = note(
        rec.model_copy(update={"owner": ctx.replica, "lease_until": ctx.now + ctx.lease_s}),
        now=ctx.now,
        event="resume",
        detail=f"resuming {rec.state.value} (previous owner: {rec.owner or 'none'})",
    )
    return Step(record=new)


def _rounds(rec: RoomRecord) -> int:
    """Failed rounds of the current attempt so far, this one included."""
    return 1 + sum(
        1 for h in rec.history if h.event == "dispatch_error" and h.data.get("key") == rec.dispatch_key
    )


def decide_dispatch_outcome(rec: RoomRecord, outcome: DispatchLanded | DispatchFailed, ctx: Context) -> Step:
    if rec.state != S.DISPATCHING or rec.dispatch_key != outcome.key:
        # The room moved on while LiveKit was asked (it ended; the step was taken over and the
        # room placed again): a dispatch that landed for it is unwanted — remove it.
        if isinstance(outcome, DispatchLanded) and outcome.dispatch_id != rec.dispatch_id:
            entry = Replaced(dispatch_id=outcome.dispatch_id, key=outcome.key)
            return Step(record=remember(rec, entry))
        return REST
    if isinstance(outcome, DispatchFailed) and rec.owner != ctx.replica:
        return REST  # another replica took the step over; it looks before it dispatches
    if isinstance(outcome, DispatchLanded):
        took = f"after {outcome.tries} tr{'y' if outcome.tries == 1 else 'ies'}"
        # Found, not created: an earlier ambiguous try (or the replica this step was taken over
        # from) did land. `explain` says so, since no CreateDispatch of this round succeeded.
        detail = (
            f"found dispatch {rec.agent_name} of this attempt already in LiveKit {took}"
            if outcome.found
            else f"CreateDispatch {rec.agent_name} ok {took}"
        )
        data: dict[str, Any] = {"dispatch_id": outcome.dispatch_id, "pool": rec.pool}
        if outcome.found:
            data["found_existing"] = True
        return Step(
            record=transition(
                rec,
                S.DISPATCHED,
                now=ctx.now,
                event="dispatched",
                detail=detail,
                data=data,
                dispatch_id=outcome.dispatch_id,
                dispatched_at=ctx.now,
                deadline=ctx.now + ctx.cfg.join_deadline_s,
                owner=None,
                lease_until=None,
            )
        )
    rounds = _rounds(rec)
    if outcome.permanent or rounds >= ctx.cfg.max_dispatch_rounds:
        detail = (
            outcome.message
            if outcome.permanent
            else f"{outcome.message} (gave up after {rounds} rounds of retries)"
        )
        # An ambiguous try of this attempt may have landed: retire its key, so a dispatch LiveKit
        # does hold is found and deleted.
        return Step(
            record=transition(
                retire(rec),
                S.FAILED,
                now=ctx.now,
                event="dispatch_error",
                detail=detail,
                data={"reason": outcome.reason, "key": rec.dispatch_key, "round": rounds},
                reason=outcome.reason,
                owner=None,
                lease_until=None,
                deadline=None,
            )
        )
    # LiveKit unreachable for the whole budget: release the claim; the sweep (any replica) tries
    # again, looking first for a dispatch that may have landed.
    return Step(
        record=note(
            rec.model_copy(update={"owner": None, "lease_until": None}),
            now=ctx.now,
            event="dispatch_error",
            detail=outcome.message,
            data={"reason": outcome.reason, "key": rec.dispatch_key, "round": rounds},
        )
    )


__all__ = ["decide_dispatch_outcome", "decide_dispatching", "remove_step", "resume"]
