"""The room index: reservations derived from records, holds that close the decide-then-write gap."""

from __future__ import annotations

import json
import random

import pytest

from orchestrator.index import _RESERVING as RESERVING
from orchestrator.index import RoomIndex
from orchestrator.records import Replaced, RoomRecord, RoomState
from orchestrator.store import Versioned, at_rest

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


def test_a_reported_job_of_a_pool_not_known_whole_is_not_counted_but_one_still_waiting_is() -> None:
    """A replica that just started knows a worker's long job list only from its next whole one:
    meanwhile a joined or speaking room (its worker reported the job, and counts it in `active`)
    does not make the pool look full; a room still waiting for its job does."""
    index = RoomIndex()
    index.apply("a", _v("a", S.DISPATCHED, "p", 1, "AD_a"))
    index.apply("b", _v("b", S.JOINED, "p", 2, "AD_b"))
    index.apply("c", _v("c", S.SPEAKING, "p", 3, "AD_c"))
    index.apply("d", _v("d", S.SPEAKING, "q", 4, "AD_d"))
    whole = {"p": True, "q": False}
    assert index.in_flight({}, lambda pool: whole[pool]) == {"p": 3}
    assert index.reserved({}, lambda pool: False) == {"p": 1}
    assert index.in_flight({}) == {"p": 3, "q": 1}  # nothing said about whole lists: all count
    # Listed, or gone: out of both counts.
    index.apply("c", _v("c", S.ENDED, "p", 5))
    assert index.in_flight({"p": frozenset({"AD_b"})}, lambda pool: True) == {"p": 1, "q": 1}
    assert index.in_flight({}, lambda pool: False) == {"p": 1}


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


class _Walk:
    """The reservations as the index computed them before they were kept incrementally: a walk over
    every live record per placement. The reference the kept counts must always agree with."""

    def __init__(self) -> None:
        self.rooms: dict[str, RoomRecord] = {}
        self.holds: dict[str, str] = {}
        self.listed: set[str] = set()

    def reserved(self, pool_jobs: dict[str, frozenset[str]]) -> dict[str, int]:
        counts: dict[str, int] = {}
        live_ids: set[str] = set()
        for rec in self.rooms.values():
            if rec.pool is None or rec.state not in RESERVING:
                continue
            if rec.dispatch_id is not None:
                live_ids.add(rec.dispatch_id)
                if rec.dispatch_id in pool_jobs.get(rec.pool, frozenset()):
                    self.listed.add(rec.dispatch_id)
                    continue
                if rec.dispatch_id in self.listed:
                    continue
            counts[rec.pool] = counts.get(rec.pool, 0) + 1
        self.listed &= live_ids
        for room, pool in self.holds.items():
            rec = self.rooms.get(room)
            if rec is None or rec.pool != pool or rec.state not in RESERVING:
                counts[pool] = counts.get(pool, 0) + 1
        return counts


@pytest.mark.parametrize("seed", range(40))
def test_kept_reservations_agree_with_a_walk_over_every_record(seed: int) -> None:
    rng = random.Random(seed)
    index, walk = RoomIndex(), _Walk()
    revision = 0
    rooms = [f"r{i}" for i in range(12)]
    pools = ["p", "q"]
    # A dispatch id belongs to one room (LiveKit makes a new one per CreateDispatch), only a
    # reserving record holds one, and a record that drops it never gets it back.
    generation = dict.fromkeys(rooms, 0)
    every_id = [f"AD_{room}_{k}" for room in rooms for k in range(40)]
    for _ in range(300):
        room = rng.choice(rooms)
        action = rng.random()
        if action < 0.55:
            revision += 1
            state = rng.choice(list(S))
            pool = rng.choice([*pools, None])
            dispatch_id = (
                f"AD_{room}_{generation[room]}" if state in RESERVING and rng.random() < 0.7 else None
            )
            if dispatch_id is None:
                generation[room] += 1
            rec = RoomRecord(room=room, state=state, pool=pool, dispatch_id=dispatch_id)
            index.apply(room, Versioned(rec, revision))
            if rec.terminal and not rec.removal_pending:
                walk.rooms.pop(room, None)
            else:
                walk.rooms[room] = rec
            if room in walk.holds and walk.holds[room] == pool:
                del walk.holds[room]
        elif action < 0.62:
            index.apply(room, None)
            generation[room] += 1
            walk.rooms.pop(room, None)
            walk.holds.pop(room, None)
        elif action < 0.72:
            pool = rng.choice(pools)
            index.hold(room, pool)
            walk.holds[room] = pool
        elif action < 0.77:
            index.release(room)
            walk.holds.pop(room, None)
        else:
            jobs = {p: frozenset(rng.sample(every_id, rng.randint(0, 60))) for p in pools}
            assert index.reserved(jobs) == walk.reserved(jobs)


def test_a_record_at_rest_is_told_from_its_bytes_and_only_one_this_build_wrote() -> None:
    """A partition's watch skips parsing ended records (most of what it replays): only the exact
    form this build writes, terminal, with no old agent left to remove, is skipped."""
    live = RoomRecord(room='odd "state":"ended" name', sid="RM_1", state=RoomState.SPEAKING)
    ended = live.model_copy(update={"state": RoomState.ENDED})
    pending = ended.model_copy(update={"replaced": [Replaced(dispatch_id="AD_1", removed=False)]})
    gone = ended.model_copy(update={"replaced": [Replaced(dispatch_id="AD_1", removed=True)]})
    assert at_rest(ended.model_dump_json().encode())
    assert at_rest(gone.model_dump_json().encode())
    assert at_rest(RoomRecord(room="r", state=RoomState.FAILED).model_dump_json().encode())  # sid null
    assert not at_rest(live.model_dump_json().encode())
    assert not at_rest(pending.model_dump_json().encode())
    assert not at_rest(json.dumps(json.loads(ended.model_dump_json()), indent=1).encode())
    # Every state this build writes reads back the same way.
    for state in RoomState:
        rec = RoomRecord(room="r", sid="RM_1", state=state)
        assert at_rest(rec.model_dump_json().encode()) == (rec.terminal and not rec.removal_pending)
