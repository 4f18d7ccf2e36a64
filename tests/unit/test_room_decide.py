"""The room decisions, pure: (record, fact, context) → Step. No NATS, no LiveKit, no clock.

Named after the sequences of issue 13 they close (late join during a redispatch, a resumed step
re-creating a dispatch, a failed removal swallowed, unreadable records, ...).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestrator.records import Replaced, RoomRecord, RoomState
from orchestrator.room.decide import (
    Context,
    decide,
    due,
    incarnation,
    is_new_incarnation,
    needs_placement,
    superseding,
    tombstone,
    wrongly_ended,
)
from orchestrator.room.facts import (
    ROOM_NODE_SILENT,
    AgentLost,
    Claimed,
    DispatchFailed,
    DispatchLanded,
    Ended,
    GhostFound,
    PlaceInput,
    RemovalDone,
    RemovalFailed,
    Report,
    RoomGone,
    Vanished,
)
from orchestrator.room.step import EnsureDispatch, RemoveReplaced
from orchestrator.scheduler import PoolView, Topology
from orchestrator.store import UnreadableRecord, _parse
from orchestrator.transitions import note
from shared.config import SwitchboardConfig
from shared.messages import AgentStatus, RoomCreated, RoomEnded

S = RoomState
NOW = 1_000_000.0
CONFIG = SwitchboardConfig.model_validate({"rules": [{"name": "all", "match": "*", "agent": "ornina"}]})


def ctx(now: float = NOW, replica: str = "r1") -> Context:
    return Context(
        now=now, replica=replica, config=CONFIG, topology=Topology.from_config(CONFIG), lease_s=15.0
    )


def holding(state: RoomState = S.SPEAKING, **changes: object) -> RoomRecord:
    base = RoomRecord(
        room="room-a",
        state=state,
        rule="all",
        agent="ornina",
        home_region="eu-central",
        attempt=1,
        pool="eu-a",
        agent_name="ornina.eu-a",
        dispatch_id="AD_1",
        dispatch_key="room-a/1",
        identity="agent-J1" if state != S.DISPATCHED else None,
        deadline=NOW + 10 if state != S.SPEAKING else None,
        dispatched_at=NOW - 1,
    )
    return base.model_copy(update=changes)


def report(state: str, dispatch_id: str, attempt: int = 1, identity: str | None = "agent-J1") -> Report:
    return Report(
        AgentStatus(
            room="room-a",
            dispatch_id=dispatch_id,
            attempt=attempt,
            pool="eu-a",
            worker="w1",
            state=state,  # type: ignore[arg-type]
            at=datetime(2026, 1, 1, tzinfo=UTC),
            identity=identity,
        )
    )


def pool(name: str, region: str = "eu-central") -> PoolView:
    return PoolView(
        pool=name,
        agent="ornina",
        region=region,
        agent_name=f"ornina.{name}",
        workers=1,
        capacity=4,
        active=0,
        load=0.0,
        draining=False,
        liveness="alive",
        age_s=0.1,
        jobs=frozenset(),
        open_slots=4,
    )


PLACE = PlaceInput(pools=[pool("eu-a"), pool("eu-b")], reserved={}, seed=7)


def step(rec: RoomRecord, fact: object = None, *, pool_gone: bool = False, c: Context | None = None):  # type: ignore[no-untyped-def]
    c = c or ctx()
    place = PLACE if fact is None and needs_placement(rec, c.now, c.replica) else None
    return decide(rec, fact, c, pool_gone=pool_gone, place=place)  # type: ignore[arg-type]


# -- 1. late join during a redispatch ------------------------------------------------------------


def test_a_redispatch_retires_the_old_dispatch_before_anything_else() -> None:
    rec = holding(S.DISPATCHED, deadline=NOW - 1)
    moved = step(rec).record
    assert moved.state == S.REDISPATCHING and moved.reason == "join_timeout"
    assert moved.dispatch_id is None and moved.identity is None
    assert [(e.dispatch_id, e.key, e.removed) for e in moved.replaced] == [("AD_1", "room-a/1", False)]
    # Nothing is placed while the old agent is not confirmed gone: the removal comes first.
    assert not needs_placement(moved, NOW, "r1")
    assert isinstance(step(moved).effect, RemoveReplaced)


def test_the_old_agent_joining_during_the_redispatch_is_removed_not_taken_as_current() -> None:
    moved = step(holding(S.DISPATCHED, deadline=NOW - 1)).record
    late = step(moved, report("joined", "AD_1", identity="agent-OLD")).record
    assert late.state == S.REDISPATCHING and late.dispatch_id is None
    (entry,) = late.replaced
    assert entry.identities == ["agent-OLD"] and not entry.removed
    assert isinstance(step(late).effect, RemoveReplaced)


def test_a_late_join_after_the_removal_was_confirmed_reopens_it_in_any_state() -> None:
    settled = holding(
        S.SPEAKING,
        dispatch_id="AD_2",
        attempt=2,
        replaced=[Replaced(dispatch_id="AD_1", attempt=1, identities=[], removed=True)],
    )
    late = step(settled, report("joined", "AD_1", identity="agent-OLD")).record
    assert late.state == S.SPEAKING and late.dispatch_id == "AD_2"
    assert late.replaced[0].identities == ["agent-OLD"] and late.removal_pending
    assert isinstance(step(late).effect, RemoveReplaced)


def test_a_join_reported_after_a_confirmed_removal_reopens_it_even_for_a_known_identity() -> None:
    """The identity was learned from the job list and confirmed absent; the agent joined later."""
    settled = holding(replaced=[Replaced(dispatch_id="AD_0", identities=["agent-OLD"], removed=True)])
    again = step(settled, report("joined", "AD_0", identity="agent-OLD")).record
    (entry,) = again.replaced
    assert not entry.removed and entry.opened == 1


def test_a_removal_that_began_before_a_reopening_does_not_settle_it() -> None:
    moved = step(holding(S.JOINED, deadline=NOW - 1)).record
    began = tuple(moved.replaced)  # what the removal effect was asked to remove
    reopened = step(moved, report("joined", "AD_1", identity="agent-J1")).record
    assert step(reopened, RemovalDone(room_exists=True, entries=began)).record is None  # still open
    late = reopened
    current = tuple(late.replaced)
    assert not step(late, RemovalDone(room_exists=True, entries=current)).record.removal_pending


# -- 2. resuming a dispatching step always looks first -------------------------------------------


def dispatching(owner: str | None = "r1", lease_until: float | None = NOW + 14) -> RoomRecord:
    return holding(
        S.DISPATCHING, dispatch_id=None, identity=None, deadline=None, owner=owner, lease_until=lease_until
    )


def test_only_the_call_that_wrote_the_claim_creates_without_looking() -> None:
    effect = step(dispatching(), Claimed("room-a/1")).effect
    assert effect == EnsureDispatch("room-a/1", look_first=False)


def test_the_same_replica_resuming_its_own_step_looks_first() -> None:
    assert step(dispatching()).effect == EnsureDispatch("room-a/1", look_first=True)
    # A claim for another attempt's key is not this one's.
    assert step(dispatching(), Claimed("room-a/0")).effect == EnsureDispatch("room-a/1", look_first=True)


def test_a_lapsed_claim_is_taken_over_by_writing_a_new_one_first() -> None:
    lapsed = dispatching(owner="r2", lease_until=NOW - 1)
    resumed = step(lapsed).record
    assert resumed.owner == "r1" and resumed.lease_until == NOW + 15
    assert resumed.history[-1].event == "resume"
    assert step(resumed).effect == EnsureDispatch("room-a/1", look_first=True)


def test_a_claim_held_by_another_replica_is_left_alone() -> None:
    held = dispatching(owner="r2", lease_until=NOW + 5)
    assert step(held).record is None and step(held).effect is None
    assert due(held, NOW, replica="r1", pool_gone=False, assign_check_s=8) is None


# -- dispatch outcomes ---------------------------------------------------------------------------


def test_a_dispatch_that_landed_for_a_room_that_moved_on_is_removed() -> None:
    ended = step(dispatching(), Ended(RoomEnded(room="room-a"))).record
    assert ended.state == S.ENDED and ended.replaced[0].key == "room-a/1"
    after = step(ended, DispatchLanded("room-a/1", "AD_9", tries=1, found=False)).record
    assert after.replaced[0].dispatch_id == "AD_9" and after.removal_pending


def test_a_transient_failure_waits_for_livekit_and_a_permanent_one_fails_with_the_key_retired() -> None:
    rec = dispatching()
    waiting = step(rec, DispatchFailed("room-a/1", "unreachable", "down", permanent=False, tries=3)).record
    assert waiting.state == S.WAITING_FOR_LIVEKIT and waiting.owner is None
    assert waiting.reason == "unreachable" and waiting.waiting_since == NOW
    assert waiting.deadline == NOW + CONFIG.orchestrator.livekit_retry_s
    assert waiting.history[-1].event == "dispatch_error" and waiting.pool == "eu-a"  # keeps its pool
    failed = step(
        rec, DispatchFailed("room-a/1", "invalid_argument", "refused", permanent=True, tries=1)
    ).record
    assert failed.state == S.FAILED and failed.reason == "invalid_argument"
    # An ambiguous earlier try may have landed: its key is kept for the removal to look up.
    assert failed.replaced[0].key == "room-a/1" and failed.removal_pending


def test_a_room_waiting_for_livekit_tries_again_looking_first_and_never_fails_before_its_deadline() -> None:
    waiting = step(dispatching(), DispatchFailed("room-a/1", "unreachable", "down", False, 3)).record
    assert step(waiting).record is None  # not due yet
    later = NOW + CONFIG.orchestrator.livekit_retry_s
    assert due(waiting, later, replica="r2", pool_gone=False, assign_check_s=8) == "retry_livekit"
    again = step(waiting, c=ctx(later, "r2")).record
    assert again.state == S.DISPATCHING and again.owner == "r2" and again.dispatch_key == "room-a/1"
    assert step(again, c=ctx(later, "r2")).effect == EnsureDispatch("room-a/1", look_first=True)
    # Many rounds later, still inside the deadline: waiting again, same since.
    rewait = step(
        again, DispatchFailed("room-a/1", "timeout", "slow", False, 4), c=ctx(later + 100, "r2")
    ).record
    assert rewait.state == S.WAITING_FOR_LIVEKIT and rewait.waiting_since == NOW
    end = NOW + CONFIG.orchestrator.livekit_wait_deadline_s
    failed = step(rewait, c=ctx(end, "r2")).record
    assert failed.state == S.FAILED and failed.reason == "livekit_unreachable"
    ended = step(rewait, Ended(RoomEnded(room="room-a"))).record
    assert ended.state == S.ENDED and ended.replaced[0].key == "room-a/1"


def test_a_room_livekit_does_not_have_ends_and_a_stray_dispatch_is_removed() -> None:
    gone = step(dispatching(), RoomGone("room-a/1", None)).record
    assert gone.state == S.ENDED and gone.reason == "room_gone" and gone.ghost_sid is None
    newer = step(dispatching(), RoomGone("room-a/1", "RM_new", after_ambiguous=True)).record
    assert newer.state == S.ENDED and newer.ghost_sid == "RM_new" and newer.removal_pending


def test_the_resync_ends_a_vanished_room_and_redispatches_a_lost_agent() -> None:
    rec = holding(S.SPEAKING, sid="RM_1", received_at=NOW - 60, joined_at=NOW - 50)
    assert step(rec, Vanished("RM_1", NOW)).record is None  # still listed
    # A record made after (or just before) the list was asked may not be in it yet.
    assert step(rec.model_copy(update={"received_at": NOW - 1}), Vanished(None, NOW)).record is None
    ended = step(rec, Vanished(None, NOW)).record
    assert ended.state == S.ENDED and ended.reason == "room_gone" and ended.removal_pending
    assert step(rec, AgentLost("someone-else", NOW)).record is None
    assert step(rec.model_copy(update={"joined_at": NOW - 1}), AgentLost("agent-J1", NOW)).record is None
    moved = step(rec, AgentLost("agent-J1", NOW)).record
    assert moved.state == S.REDISPATCHING and moved.reason == "agent_lost" and moved.excluded == []


def test_a_failed_round_of_a_step_another_replica_took_over_writes_nothing() -> None:
    taken = dispatching(owner="r2", lease_until=NOW + 10)
    assert step(taken, DispatchFailed("room-a/1", "timeout", "slow", permanent=False, tries=2)).record is None


# -- 5. a failed removal is not swallowed ---------------------------------------------------------


def test_a_failed_removal_keeps_the_room_waiting_for_it() -> None:
    moved = step(holding(deadline=NOW - 1, state=S.JOINED)).record
    assert step(moved, RemovalFailed("unavailable", "LiveKit 503")).record is None
    assert moved.removal_pending and not needs_placement(moved, NOW, "r1")
    assert due(moved, NOW, replica="r1", pool_gone=False, assign_check_s=8) == "remove_replaced"


def test_a_room_whose_livekit_node_never_answers_ends_after_the_limit_and_only_then() -> None:
    """A crashed LiveKit node leaves its rooms listed; calls that must reach it answer 503."""
    moved = step(holding(deadline=NOW - 1, state=S.JOINED)).record
    silent = RemovalFailed(ROOM_NODE_SILENT, "ListDispatch: LiveKit answered HTTP 503 unavailable")
    limit = CONFIG.orchestrator.room_unreachable_after_s
    assert step(moved, silent, c=ctx(NOW + limit - 1)).record is None  # not yet: asked again
    # Any other failure, however long, keeps the removal pending: LiveKit itself may be down.
    assert step(moved, RemovalFailed("unavailable", "LiveKit 503"), c=ctx(NOW + 10 * limit)).record is None
    over = step(moved, silent, c=ctx(NOW + limit)).record
    assert over.state == S.ENDED and over.reason == "room_unreachable"
    assert not over.removal_pending and all(e.removed for e in over.replaced)
    assert "answered nothing about it for 60 s" in over.history[-1].detail


def test_a_confirmed_removal_lets_placement_go_on_and_a_gone_room_ends() -> None:
    moved = step(holding(S.JOINED, deadline=NOW - 1)).record
    done = step(moved, RemovalDone(room_exists=True, entries=tuple(moved.replaced))).record
    assert not done.removal_pending and done.state == S.REDISPATCHING
    placed = step(done)
    assert placed.record.state == S.DISPATCHING and placed.record.attempt == 2
    assert placed.record.pool == "eu-b"  # the pool that timed out is excluded
    assert placed.then == Claimed("room-a/2")
    gone = step(moved, RemovalDone(room_exists=False, entries=tuple(moved.replaced))).record
    assert gone.state == S.ENDED and gone.reason == "room_gone" and not gone.removal_pending


# -- timers: one function ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rec", "pool_gone", "cause"),
    [
        (holding(S.SPEAKING), True, "pool_dead"),
        (holding(S.SPEAKING), False, None),
        (holding(S.DISPATCHED, deadline=NOW - 1), False, "join_timeout"),
        (holding(S.JOINED, deadline=NOW - 1), False, "no_voice"),
        (holding(S.DISPATCHED, dispatched_at=NOW - 9), False, "check_assignment"),
        (holding(S.DISPATCHED, dispatched_at=NOW - 9, assign_checked_at=NOW - 1), False, None),
        (holding(S.WAITING_FOR_POOL, dispatch_id=None, deadline=NOW + 30), False, "place"),
        (holding(S.ENDED), False, None),
    ],
)
def test_due(rec: RoomRecord, pool_gone: bool, cause: str | None) -> None:
    assert due(rec, NOW, replica="r1", pool_gone=pool_gone, assign_check_s=8.0) == cause


def test_a_report_that_the_agent_left_goes_through_the_removal_which_learns_if_the_room_is_gone() -> None:
    left = step(holding(), report("left", "AD_1")).record
    assert left.state == S.REDISPATCHING and left.reason == "left" and left.removal_pending
    assert left.excluded == []


def test_an_agent_leaving_a_draining_worker_is_handed_over_as_a_drain() -> None:
    status = report("left", "AD_1").status
    drained = step(holding(), Report(status, draining=True)).record
    assert drained.state == S.REDISPATCHING and drained.reason == "drain" and drained.removal_pending
    assert drained.excluded == [] and drained.history[-1].data["cause"] == "drain"


def test_the_agent_of_this_attempt_reporting_before_the_create_answer_is_adopted() -> None:
    joined = step(dispatching(), report("joined", "AD_7", identity="agent-J7")).record
    assert joined.state == S.JOINED and joined.dispatch_id == "AD_7" and joined.identity == "agent-J7"


def test_a_join_keeps_the_workers_phases_in_the_timeline() -> None:
    began = datetime.fromtimestamp(NOW - 0.6, tz=UTC)
    connected = datetime.fromtimestamp(NOW - 0.35, tz=UTC)
    marks = {"started_at": began, "connected_at": connected}
    status = report("joined", "AD_1").status.model_copy(update=marks)
    joined = step(holding(S.DISPATCHED), Report(status)).record
    entry = joined.history[-1]
    assert (entry.event, entry.data["started_at"], entry.data["connected_at"]) == (
        "joined",
        round(NOW - 0.6, 3),
        round(NOW - 0.35, 3),
    )
    assert "job began 0.40 s after the dispatch" in entry.detail
    assert "room connected 0.25 s after that" in entry.detail


# -- 6. unreadable records -----------------------------------------------------------------------


def test_a_record_from_a_newer_build_is_read_and_a_corrupt_one_is_named() -> None:
    newer = holding().model_dump_json().replace('"v":1', '"v":1,"added_later":{"x":1}')
    assert _parse("room-a", newer.encode()).state == S.SPEAKING
    with pytest.raises(UnreadableRecord, match="room-a"):
        _parse("room-a", b"{not json")


def test_a_dispatch_that_lands_after_the_room_ended_is_remembered_for_removal() -> None:
    ended = step(dispatching(), Ended(RoomEnded(room="room-a"))).record
    after = step(ended, DispatchLanded("room-a/1", "AD_9", 1, False, "RM_1")).record
    assert after.replaced[-1].dispatch_id == "AD_9" and after.replaced[-1].sid == "RM_1"
    assert after.removal_pending and after.ghost_sid is None


def test_incarnations_by_sid_and_by_creation_time() -> None:
    t = lambda s: datetime.fromtimestamp(s, UTC)  # noqa: E731
    live = holding(S.SPEAKING, sid="RM_1", event_at=NOW - 100)
    assert incarnation(live, RoomCreated(room="room-a", sid="RM_1")) == "same"
    assert incarnation(live, RoomCreated(room="room-a", sid="RM_2")) == "newer"  # its end was lost
    assert incarnation(live, RoomCreated(room="room-a", sid="RM_0", created_at=t(NOW - 200))) == "older"
    # Without a sid on one side, only a creation time tells; a live record is not superseded by it.
    assert incarnation(live, RoomCreated(room="room-a", created_at=t(NOW))) == "same"
    sidless = holding(S.SPEAKING, event_at=NOW - 100)
    assert incarnation(sidless, RoomCreated(room="room-a", created_at=t(NOW))) == "newer"
    assert incarnation(sidless, RoomCreated(room="room-a", created_at=t(NOW - 100))) == "same"
    # An ended record: a room created after its end is newer, even when notes came after the end.
    ended = step(sidless, Ended(RoomEnded(room="room-a")), c=ctx(NOW - 10)).record
    noted = note(ended, now=NOW + 50, event="removed", detail="replaced agents gone")
    assert incarnation(noted, RoomCreated(room="room-a", created_at=t(NOW))) == "newer"
    assert incarnation(noted, RoomCreated(room="room-a", created_at=t(NOW - 50))) == "same"
    # A tombstone (an end without a start): its room's late start is the same room.
    tomb = tombstone(RoomEnded(room="room-a"), ctx(NOW))
    assert incarnation(tomb, RoomCreated(room="room-a", sid="RM_1", created_at=t(NOW - 5))) == "same"


def test_a_room_created_before_a_room_gone_end_was_written_is_still_a_newer_room() -> None:
    """(simulator seed 2006985) A sid-less record's dispatch finds the name under another sid and
    ends ``room_gone`` at NOW: the room that replaced it was created earlier (NOW - 3), and its own
    sid-less event is newer than the record's room, not a duplicate of the ended record."""
    t = lambda s: datetime.fromtimestamp(s, UTC)  # noqa: E731
    rec = holding(
        S.DISPATCHING,
        sid=None,
        event_at=NOW - 10,
        dispatch_id=None,
        identity=None,
        owner="r1",
        lease_until=NOW + 5,
    )
    gone = step(rec, RoomGone(rec.dispatch_key or "", "RM_other")).record
    assert gone.state == S.ENDED and gone.reason == "room_gone" and gone.ended_at == NOW
    assert incarnation(gone, RoomCreated(room="room-a", created_at=t(NOW - 3))) == "newer"
    assert incarnation(gone, RoomCreated(room="room-a", created_at=t(NOW - 10))) == "same"  # its own, late
    # Ended by the room's own end instead: only a room created after the end is a newer one.
    ended = step(rec, Ended(RoomEnded(room="room-a"))).record
    assert incarnation(ended, RoomCreated(room="room-a", created_at=t(NOW - 3))) == "same"


def test_a_stale_sidless_end_does_not_end_a_newer_room_and_a_wrong_end_is_undone_by_the_resync() -> None:
    newer = holding(S.DISPATCHED, sid="RM_2", event_at=NOW - 5)
    stale = Ended(RoomEnded(room="room-a"), published_at=NOW - 6)  # published before this room began
    assert step(newer, stale).record is None
    ended = step(newer, Ended(RoomEnded(room="room-a"), published_at=NOW - 4), c=ctx(NOW - 4)).record
    assert ended.state == S.ENDED and ended.reason == "room_ended"
    listed = RoomCreated(room="room-a", sid="RM_2")
    assert wrongly_ended(ended, listed, NOW, grace_s=3.0)
    assert not wrongly_ended(ended, listed, NOW - 2, grace_s=3.0)  # too fresh: LiveKit may lag
    assert not wrongly_ended(ended, RoomCreated(room="room-a", sid="RM_3"), NOW, grace_s=3.0)
    gone = step(newer, Vanished(None, NOW + 60), c=ctx(NOW + 60)).record
    assert not wrongly_ended(gone, listed, NOW + 100, grace_s=3.0)  # only an end by an event


def test_a_newer_room_holding_an_old_rooms_dispatch_and_nobody_else_was_made_by_it() -> None:
    """Our CreateDispatch for room RM_1 landed after RM_1 was deleted and made RM_2 (a ghost); RM_2's
    own event superseded the record before the landing was known. The removal finds the old
    dispatch in RM_2, with no caller there, and says so before deleting it: RM_2 is not served,
    and the removal goes on from the ended record."""
    old = holding(S.DISPATCHING, sid="RM_1", dispatch_id=None, identity=None, owner=None, lease_until=None)
    new = superseding(new_rec("RM_2"), old)
    assert new.replaced[0].sid == "RM_1" and new.removal_pending
    entry = new.replaced[0].model_copy(update={"dispatch_id": "AD_1", "identities": ["agent-J1"]})
    ghost = step(new, GhostFound(entry, "RM_2")).record
    assert ghost.state == S.ENDED and ghost.reason == "room_gone" and ghost.ghost_sid == "RM_2"
    assert ghost.removal_pending and step(ghost).effect == RemoveReplaced(tuple(ghost.replaced))
    assert step(ghost, GhostFound(entry, "RM_2")).record is None  # known: the removal goes on


def test_an_ended_record_whose_dispatch_is_found_in_a_newer_room_remembers_that_room_as_a_ghost() -> None:
    """The room ended while our CreateDispatch was on its way; the dispatch landed, made the room
    again (RM_2) and stayed there. The ended record's removal finds it there, no caller in it:
    RM_2's own event, arriving later, is our ghost's; once a caller joins RM_2 it is served."""
    old = holding(S.DISPATCHING, sid="RM_1", dispatch_id=None, identity=None, owner=None, lease_until=None)
    ended = step(old, Ended(RoomEnded(room="room-a", sid="RM_1"))).record
    assert ended.state == S.ENDED and ended.removal_pending
    marked = step(ended, GhostFound(ended.replaced[0], "RM_2")).record
    assert marked.ghost_sid == "RM_2" and marked.state == S.ENDED and marked.removal_pending
    assert marked.history[-1].event == "ghost"
    ghost_event = RoomCreated(room="room-a", sid="RM_2")
    assert incarnation(marked, ghost_event) == "ghost"
    assert not is_new_incarnation(marked, ghost_event)
    assert is_new_incarnation(marked, ghost_event, occupied=True)


def new_rec(sid: str) -> RoomRecord:
    return RoomRecord(room="room-a", sid=sid, received_at=NOW, owner="r1", lease_until=NOW + 15)


def test_livekit_refusing_the_replicas_credentials_leaves_the_room_waiting_not_failed() -> None:
    """Issue 17: a replica whose key pair LiveKit refuses steps back; its room waits for another."""
    refused = DispatchFailed("room-a/1", "unauthenticated", "LiveKit rejected the API credentials", True, 1)
    waiting = step(dispatching(), refused).record
    assert waiting.state == S.WAITING_FOR_LIVEKIT and waiting.owner is None
    assert waiting.pool == "eu-a" and "rejected replica r1's API credentials" in waiting.history[-1].detail
