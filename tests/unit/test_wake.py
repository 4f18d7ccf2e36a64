"""The wake-up rule the room index keeps its heap by never lets a due room sleep: whenever ``due``
finds a reason by the clock (deaths aside), ``wake_at`` had said that time or earlier."""

from __future__ import annotations

import random

import pytest

from orchestrator.index import RoomIndex
from orchestrator.records import Replaced, RoomRecord, RoomState
from orchestrator.room.decide import due
from orchestrator.store import Versioned
from orchestrator.wake import wake_at

S = RoomState
ASSIGN_CHECK_S = 8.0


def random_record(rng: random.Random) -> RoomRecord:
    def maybe(value: float) -> float | None:
        return value if rng.random() < 0.6 else None

    return RoomRecord(
        room="room-a",
        state=rng.choice(list(S)),
        pool=rng.choice(["p", None]),
        dispatch_id=rng.choice(["AD_1", None]),
        deadline=maybe(rng.uniform(0, 100)),
        owner=rng.choice(["r1", "r2", None]),
        lease_until=maybe(rng.uniform(0, 100)),
        dispatched_at=maybe(rng.uniform(0, 100)),
        assign_checked_at=maybe(rng.uniform(0, 100)),
        replaced=[Replaced(dispatch_id="AD_0")] if rng.random() < 0.1 else [],
    )


@pytest.mark.parametrize("seed", range(20))
def test_wake_at_is_never_later_than_due(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        rec = random_record(rng)
        at = wake_at(rec, assign_check_s=ASSIGN_CHECK_S)
        for now in (rng.uniform(0, 120) for _ in range(5)):
            cause = due(rec, now, replica="r1", pool_gone=False, assign_check_s=ASSIGN_CHECK_S)
            if cause is not None:
                assert at is not None and at <= now, (rec, now, cause, at)


def test_a_room_waits_for_its_time_and_one_still_due_comes_back_until_it_changes() -> None:
    index = RoomIndex(assign_check_s=ASSIGN_CHECK_S)
    speaking = RoomRecord(room="a", state=S.SPEAKING, pool="p", dispatch_id="AD_1")
    joined = RoomRecord(room="b", state=S.JOINED, pool="p", dispatch_id="AD_2", deadline=50.0)
    waiting = RoomRecord(room="c", state=S.WAITING_FOR_POOL)
    for i, rec in enumerate((speaking, joined, waiting)):
        index.apply(rec.room, Versioned(rec, i + 1))
    assert index.due_by_time(10.0) == ["c"]  # a speaking room never wakes by the clock
    assert index.due_by_time(20.0) == ["c"]  # still waiting: looked at again
    assert sorted(index.due_by_time(50.0)) == ["b", "c"]
    index.apply("b", Versioned(joined.model_copy(update={"deadline": 80.0}), 10))
    index.apply("c", Versioned(waiting.model_copy(update={"state": S.ENDED}), 11))
    assert index.due_by_time(60.0) == []  # b's new time is later; c ended
    assert index.due_by_time(80.0) == ["b"]
    index.apply("b", None)
    assert index.due_by_time(1000.0) == []


def test_the_next_wake_is_the_earliest_live_time_and_a_still_due_room_waits_for_again_at() -> None:
    index = RoomIndex(assign_check_s=ASSIGN_CHECK_S)
    assert index.next_wake() is None
    joined = RoomRecord(room="b", state=S.JOINED, pool="p", dispatch_id="AD_2", deadline=50.0)
    index.apply("b", Versioned(joined, 1))
    assert index.next_wake() == 50.0
    index.apply("b", Versioned(joined.model_copy(update={"deadline": 70.0}), 2))
    assert index.next_wake() == 70.0  # the superseded 50.0 is dropped, not woken for
    assert index.due_by_time(70.0, again_at=70.25) == ["b"]
    assert index.next_wake() == 70.25  # still due: looked at again then, not at once
    assert index.due_by_time(70.1, again_at=70.35) == []
    assert index.due_by_time(70.25, again_at=70.5) == ["b"]
    index.apply("b", Versioned(joined.model_copy(update={"state": S.SPEAKING, "deadline": None}), 3))
    assert index.next_wake() is None


def test_holding_rooms_are_found_by_their_pool_worker_and_job() -> None:
    index = RoomIndex()
    rec = RoomRecord(room="a", state=S.SPEAKING, pool="p", worker="w1", dispatch_id="AD_1")
    index.apply("a", Versioned(rec, 1))
    assert index.pools_holding() == ["p"] and index.holding_on("p") == {"a"}
    assert index.workers_holding() == [("p", "w1")] and index.holding_with("p", "w1") == {"a"}
    assert index.holding_job("AD_1") == "a"
    index.apply("a", Versioned(rec.model_copy(update={"state": S.REDISPATCHING, "dispatch_id": None}), 2))
    assert index.pools_holding() == [] and index.workers_holding() == [] and index.holding_job("AD_1") is None
