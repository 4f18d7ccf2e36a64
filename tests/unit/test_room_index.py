"""The room index: reservations derived from records, holds that close the decide-then-write gap."""

from __future__ import annotations

from orchestrator.index import RoomIndex
from orchestrator.records import RoomRecord, RoomState
from orchestrator.store import Versioned

S = RoomState


def _v(
    room: str, state: RoomState, pool: str | None, revision: int, dispatch_id: str | None = None
) -> Versioned:
    return Versioned(RoomRecord(room=room, state=state, pool=pool, dispatch_id=dispatch_id), revision)


def test_reserved_counts_placed_rooms_until_the_heartbeat_lists_their_job() -> None:
    index = RoomIndex()
    index.apply("a", _v("a", S.DISPATCHING, "p", 1))
    index.apply("b", _v("b", S.DISPATCHED, "p", 2, "AD_b"))
    index.apply("c", _v("c", S.SPEAKING, "p", 3, "AD_c"))
    index.apply("d", _v("d", S.WAITING_FOR_POOL, None, 4))
    assert index.reserved({"p": frozenset({"AD_c"})}) == {"p": 2}


def test_terminal_records_leave_the_index_and_old_revisions_never_win() -> None:
    index = RoomIndex()
    index.apply("a", _v("a", S.DISPATCHED, "p", 5, "AD_a"))
    index.apply("a", _v("a", S.RECEIVED, None, 3))
    assert index.get("a") is not None and index.get("a").revision == 5  # type: ignore[union-attr]
    index.apply("a", _v("a", S.ENDED, "p", 6))
    assert index.get("a") is None and index.reserved({}) == {}


def test_a_hold_counts_before_the_write_and_hands_over_to_the_record() -> None:
    index = RoomIndex()
    index.apply("a", _v("a", S.RECEIVED, None, 1))
    index.hold("a", "p")
    index.hold("b", "p")  # a second decision in the same replica, before either write landed
    assert index.reserved({}) == {"p": 2}
    index.apply("a", _v("a", S.DISPATCHING, "p", 2))  # the write landed: the record reserves now
    assert index.reserved({}) == {"p": 2}
    index.release("b")  # b's write lost its compare-and-set
    assert index.reserved({}) == {"p": 1}


def test_a_job_once_listed_is_never_a_reservation_again() -> None:
    """Its job ended (the heartbeat no longer lists it) before the record heard: not reserved."""
    index = RoomIndex()
    index.apply("a", _v("a", S.SPEAKING, "p", 1, "AD_a"))
    assert index.reserved({"p": frozenset({"AD_a"})}) == {}
    assert index.reserved({"p": frozenset()}) == {}


def test_live_rooms_by_state_follow_every_change() -> None:
    index = RoomIndex()
    index.apply("a", _v("a", S.DISPATCHING, "p", 1))
    index.apply("b", _v("b", S.WAITING_FOR_POOL, None, 2))
    index.apply("a", _v("a", S.SPEAKING, "p", 3, "AD_a"))
    index.apply("a", _v("a", S.JOINED, "p", 2))  # an older revision changes nothing
    counts = index.by_state()
    assert counts["speaking"] == 1 and counts["waiting_for_pool"] == 1 and counts["dispatching"] == 0
    assert "ended" not in counts and sum(counts.values()) == 2
    index.apply("a", _v("a", S.ENDED, "p", 4))
    index.apply("b", None)  # expired or deleted
    assert sum(index.by_state().values()) == 0
