"""The ``dispatching`` step: what to ask LiveKit, and what its answer means for the record."""

from __future__ import annotations

from typing import Any

from orchestrator.records import Replaced, RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.retire import remember, remove_step, retire
from orchestrator.room.facts import Claimed, DispatchFailed, DispatchLanded, GhostFound, RoomGone
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
            entry = Replaced(dispatch_id=outcome.dispatch_id, key=outcome.key, sid=outcome.room_sid)
            # Had it landed after the room was deleted, LiveKit made the room again for it: that
            # ghost is known by this dispatch in it (Effects.ghost_of, the removal, the worker).
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
                sid=rec.sid or outcome.room_sid,
                dispatched_at=ctx.now,
                deadline=ctx.now + ctx.cfg.join_deadline_s,
                owner=None,
                lease_until=None,
                waiting_since=None,
            )
        )
    rounds = _rounds(rec)
    if outcome.reason == "claim_lost":
        # Our lease renewal was in doubt: let whoever holds the step now (maybe us, at the next
        # sweep) take it, looking first.
        return Step(
            record=note(
                rec.model_copy(update={"owner": None, "lease_until": None}),
                now=ctx.now,
                event="dispatch_error",
                detail=outcome.message,
                data={"reason": outcome.reason, "key": rec.dispatch_key, "round": rounds},
            )
        )
    # LiveKit refusing this replica's credentials is the replica's fault, not the room's (a bad
    # rollout, a secret rotated on one side): the replica steps back (OrchestratorService), and the
    # room waits for a replica LiveKit accepts, as for an outage (issue 17).
    refused = outcome.reason == "unauthenticated"
    if outcome.permanent and not refused:
        # An ambiguous try of this attempt may have landed: retire its key, so a dispatch LiveKit
        # does hold is found and deleted.
        return Step(record=_fail(rec, ctx, outcome.reason, outcome.message, rounds))
    # LiveKit unreachable (or not answering) for a whole round: the room waits for it, visibly,
    # keeping its pool and its attempt; a round every livekit_retry_s looks first for a dispatch
    # an ambiguous try may have left. An outage ends; the room is still there when it does.
    since = rec.waiting_since if rec.waiting_since is not None else ctx.now
    why = (
        f"LiveKit rejected replica {ctx.replica}'s API credentials ({outcome.message}); the room waits "
        "for a replica LiveKit accepts"
        if refused
        else f"dispatch round {rounds} got no answer from LiveKit (last try: {outcome.message}); "
        "waiting for LiveKit"
    )
    return Step(
        record=transition(
            rec,
            S.WAITING_FOR_LIVEKIT,
            now=ctx.now,
            event="dispatch_error",
            detail=f"{why}, next round in {ctx.cfg.livekit_retry_s:g}s",
            data={"reason": outcome.reason, "key": rec.dispatch_key, "round": rounds},
            reason=outcome.reason,
            waiting_since=since,
            deadline=ctx.now + ctx.cfg.livekit_retry_s,
            owner=None,
            lease_until=None,
        )
    )


def decide_room_gone(rec: RoomRecord, outcome: RoomGone, ctx: Context) -> Step:
    """Nothing to dispatch into: the record's room is not in LiveKit (or only a newer one is)."""
    if rec.state != S.DISPATCHING or rec.dispatch_key != outcome.key or rec.owner != ctx.replica:
        return REST
    if outcome.sid is None:
        detail = "LiveKit has no room of this name: not dispatching (CreateDispatch would create it)"
    else:
        detail = f"LiveKit lists this room name under another sid ({outcome.sid}): this room is over"
    ghost = outcome.sid if outcome.after_ambiguous else None
    return Step(record=gone(rec, ctx, detail, ghost_sid=ghost))


def decide_ghost_found(rec: RoomRecord, found: GhostFound, ctx: Context) -> Step:
    """The room LiveKit lists under this name now is our ghost: never served on the strength of
    its own event (or of the resync, until a caller is in it). An ended record remembers its sid;
    a live one ends, its own dispatch retired (its room is gone, or is that ghost). The removal
    goes on once this is written."""
    if rec.ghost_sid == found.sid:
        return REST
    entry = found.entry
    detail = (
        f"the room now listed as {rec.room} (sid {found.sid}) was made by our dispatch "
        f"{entry.dispatch_id or entry.key} for the room of this name that had ended (sid {entry.sid}), "
        "and no caller is in it: not served"
    )
    if rec.terminal:
        return Step(
            record=note(
                rec.model_copy(update={"ghost_sid": found.sid}), now=ctx.now, event="ghost", detail=detail
            )
        )
    return Step(record=gone(rec, ctx, detail, ghost_sid=found.sid))


def gone(rec: RoomRecord, ctx: Context, detail: str, ghost_sid: str | None = None) -> RoomRecord:
    """``rec`` ended because LiveKit no longer has its room; any dispatch of it is retired."""
    return transition(
        retire(rec),
        S.ENDED,
        now=ctx.now,
        event="ended",
        detail=detail,
        reason="room_gone",
        deadline=None,
        owner=None,
        lease_until=None,
        waiting_since=None,
        ghost_sid=ghost_sid or rec.ghost_sid,
    )


def _fail(rec: RoomRecord, ctx: Context, reason: str, detail: str, rounds: int) -> RoomRecord:
    return transition(
        retire(rec),
        S.FAILED,
        now=ctx.now,
        event="dispatch_error",
        detail=detail,
        data={"reason": reason, "key": rec.dispatch_key, "round": rounds},
        reason=reason,
        owner=None,
        lease_until=None,
        deadline=None,
        waiting_since=None,
    )


def decide_waiting(rec: RoomRecord, ctx: Context) -> Step:
    """A room waiting for LiveKit: another round when its retry time comes (claimed, then looking
    first), or ``failed`` once it has waited ``livekit_wait_deadline_s`` in all."""
    if rec.state != S.WAITING_FOR_LIVEKIT or (rec.deadline is not None and rec.deadline > ctx.now):
        return REST
    waited = ctx.now - (rec.waiting_since if rec.waiting_since is not None else ctx.now)
    if waited >= ctx.cfg.livekit_wait_deadline_s:
        detail = f"LiveKit's API unreachable for {waited:.0f}s (last: {rec.reason or 'unknown'})"
        return Step(record=_fail(rec, ctx, "livekit_unreachable", detail, _rounds(rec) - 1))
    claimed = transition(
        rec,
        S.DISPATCHING,
        now=ctx.now,
        event="resume",
        detail=f"trying LiveKit again (waiting {waited:.0f}s)",
        owner=ctx.replica,
        lease_until=ctx.now + ctx.lease_s,
        deadline=None,
    )
    return Step(record=claimed)


__all__ = [
    "decide_dispatch_outcome",
    "decide_dispatching",
    "decide_room_gone",
    "decide_waiting",
    "gone",
    "remove_step",
    "resume",
]
