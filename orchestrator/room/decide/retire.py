"""Replaced dispatches: remembered in the record until LiveKit confirms their agents are gone.

Whenever a room stops wanting its dispatch (a redispatch, the room's end, a failure after
ambiguous tries) the dispatch moves to ``replaced`` *before* anything else happens, and a late
``joined`` from a replaced dispatch re-opens its removal in whatever state the room is. Placement
waits for every removal to be confirmed, so a new agent never joins next to an old one.
"""

from __future__ import annotations

from orchestrator.records import MAX_REPLACED, Replaced, RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.facts import ROOM_NODE_SILENT, RemovalDone, RemovalFailed
from orchestrator.room.step import REST, RemoveReplaced, Step
from orchestrator.transitions import note, transition


def current_dispatch(rec: RoomRecord) -> Replaced | None:
    """The room's current dispatch as a replaced entry (None: it never asked LiveKit for one)."""
    if rec.dispatch_id is None and rec.dispatch_key is None and rec.identity is None:
        return None
    return Replaced(
        dispatch_id=rec.dispatch_id,
        key=rec.dispatch_key,
        agent_name=rec.agent_name,
        attempt=rec.attempt,
        sid=rec.sid,
        identities=[rec.identity] if rec.identity else [],
    )


def remember(rec: RoomRecord, entry: Replaced) -> RoomRecord:
    """``rec`` with ``entry`` among its replaced dispatches, merged with what it already knew."""
    merged: list[Replaced] = []
    found = False
    for old in rec.replaced:
        if old.same(entry):
            found = True
            identities = list(dict.fromkeys([*old.identities, *entry.identities]))
            merged.append(
                old.model_copy(
                    update={
                        "dispatch_id": old.dispatch_id or entry.dispatch_id,
                        "key": old.key or entry.key,
                        "agent_name": old.agent_name or entry.agent_name,
                        "sid": old.sid or entry.sid,
                        "identities": identities,
                        "removed": old.removed and entry.removed,
                        "opened": old.opened + (0 if entry.removed else 1),
                    }
                )
            )
        else:
            merged.append(old)
    if not found:
        merged.append(entry)
    if len(merged) > MAX_REPLACED:
        # Forget the oldest confirmed removals first; a pending one is never forgotten.
        done = [e for e in merged if e.removed]
        drop = {id(e) for e in done[: len(merged) - MAX_REPLACED]}
        merged = [e for e in merged if id(e) not in drop]
    return rec.model_copy(update={"replaced": merged})


def retire(rec: RoomRecord) -> RoomRecord:
    """Move the current dispatch (and its agent) to ``replaced``: from now on it is unwanted."""
    entry = current_dispatch(rec)
    if entry is None:
        return rec
    return remember(rec, entry).model_copy(update={"dispatch_id": None, "identity": None, "worker": None})


def remove_step(rec: RoomRecord) -> Step:
    pending = tuple(e for e in rec.replaced if not e.removed)
    return Step(effect=RemoveReplaced(pending)) if pending else REST


def _settled(rec: RoomRecord, confirmed: tuple[Replaced, ...]) -> RoomRecord:
    """``rec`` with the ``confirmed`` entries (as the removal found them) marked removed. An entry
    re-opened since the removal began (a late report arrived while LiveKit was asked) stays open."""
    settled: list[Replaced] = []
    for old in rec.replaced:
        match = next((c for c in confirmed if c.same(old)), None)
        if match is None:
            settled.append(old)
            continue
        settled.append(
            old.model_copy(
                update={
                    "dispatch_id": old.dispatch_id or match.dispatch_id,
                    "identities": list(dict.fromkeys([*old.identities, *match.identities])),
                    "removed": old.removed or old.opened == match.opened,
                }
            )
        )
    return rec.model_copy(update={"replaced": settled})


def decide_removal_failed(rec: RoomRecord, failed: RemovalFailed, ctx: Context) -> Step:
    """The removal stays pending in the record and the sweep tries again; except in a room whose
    LiveKit node is gone. A crashed node leaves its rooms listed (LiveKit's Redis keeps them), and
    every call that must reach the node answers 503: once the record has not changed for
    ``room_unreachable_after_s`` and the removal still fails so, the room is over for us, as a room
    LiveKit no longer has (its agents went with the node); a user who opens it again is a new room."""
    if failed.reason != ROOM_NODE_SILENT:
        return REST
    since = rec.history[-1].at if rec.history else rec.received_at
    limit = ctx.cfg.room_unreachable_after_s
    if ctx.now - since < limit:
        return REST
    detail = (
        f"LiveKit lists the room, but its node has answered nothing about it for {limit:.0f} s "
        f"({failed.message}): counted gone with its node"
    )
    over = _over(rec, ctx, detail, "room_unreachable")
    if rec.terminal:  # an ended room's old agents: noted gone with the node
        return Step(record=note(over, now=ctx.now, event="removed", detail=detail))
    return Step(record=over)


def _over(rec: RoomRecord, ctx: Context, detail: str, reason: str) -> RoomRecord:
    """``rec`` with its dispatches retired and every replaced agent counted gone; a live record
    ends (``reason``), a terminal one stays as it was otherwise."""
    gone = retire(rec)
    gone = gone.model_copy(
        update={"replaced": [e.model_copy(update={"removed": True}) for e in gone.replaced]}
    )
    if rec.terminal:
        return gone
    return transition(
        gone,
        RoomState.ENDED,
        now=ctx.now,
        event="ended",
        detail=detail,
        reason=reason,
        deadline=None,
        owner=None,
        lease_until=None,
    )


def decide_removal_done(rec: RoomRecord, done: RemovalDone, ctx: Context) -> Step:
    """Mark what LiveKit confirmed gone; a room LiveKit no longer has ends here (nothing to serve,
    and a new CreateDispatch would only create an empty room again)."""
    if not done.room_exists:
        detail = f"LiveKit no longer has the room ({rec.state.value}, {rec.reason or 'no reason'})"
        gone = _over(rec, ctx, detail, "room_gone")
        return Step(record=gone) if gone != rec else REST
    new = _settled(rec, done.entries)
    if new == rec and not done.refused:
        return REST
    ids = ", ".join(i for e in done.entries for i in e.identities) or "none present"
    detail = f"replaced agents gone from the room: {ids}"
    if done.refused:
        detail += (
            f"; not removed: {', '.join(done.refused)} (named by a report, but not an agent of the "
            "replaced dispatch's pool, or the room's current agent)"
        )
    return Step(record=note(new, now=ctx.now, event="removed", detail=detail))
