"""Every replica's in-memory view of all live room records, fed by a KV watch.

Timers, pool-death failover and reservation counts are computed from this view, so they survive
the replica that set them: the deadlines live in the records, and any replica's sweep acts on
them (compare-and-set decides which one wins).
"""

from __future__ import annotations

import heapq
import math
import sys
from collections import Counter
from collections.abc import Callable, Container, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

from orchestrator.records import HOLDING, TERMINAL, RoomState, RoomView
from orchestrator.store import Versioned
from orchestrator.wake import wake_at

K = TypeVar("K")

# Counted against a pool's headroom until its heartbeat lists the dispatch as a job.
# A room waiting for LiveKit keeps its pool: it is dispatched there as soon as LiveKit answers.
_RESERVING = frozenset(
    {
        RoomState.DISPATCHING,
        RoomState.WAITING_FOR_LIVEKIT,
        RoomState.DISPATCHED,
        RoomState.JOINED,
        RoomState.SPEAKING,
    }
)


class RoomEntry(NamedTuple):
    """What a replica keeps in memory of a live record: the fields timers, reservations, deaths
    and the resync read (:class:`RoomView`), not the record's history, decisions and metadata.
    Steps read the full record from KV; an entry is a few hundred bytes where a parsed record is
    ~17 kB.

    Its fields are plain values (the state as its string) and the index stores them as an exact
    tuple, which the garbage collector stops tracking: a full collection does not walk every live
    room (70 ms at 100,000 rooms when the entries were objects, a latency spike each time)."""

    room: str
    revision: int
    state_value: str
    sid: str | None
    ghost_sid: str | None
    pool: str | None
    dispatch_id: str | None
    worker: str | None
    identity: str | None
    owner: str | None
    lease_until: float | None
    deadline: float | None
    dispatched_at: float | None
    assign_checked_at: float | None
    joined_at: float | None
    voice_at: float | None
    received_at: float
    event_at: float | None
    removal_pending: bool
    ended_at: float | None
    reason: str | None

    @property
    def state(self) -> RoomState:
        return RoomState(self.state_value)

    @property
    def terminal(self) -> bool:
        return self.state_value in TERMINAL

    @classmethod
    def of(cls, versioned: Versioned) -> RoomEntry:
        rec = versioned.record
        return cls(
            room=sys.intern(rec.room),
            revision=versioned.revision,
            state_value=rec.state.value,
            sid=rec.sid,
            ghost_sid=rec.ghost_sid,
            pool=_shared(rec.pool),
            dispatch_id=rec.dispatch_id,
            worker=_shared(rec.worker),
            identity=rec.identity,
            owner=_shared(rec.owner),
            lease_until=rec.lease_until,
            deadline=rec.deadline,
            dispatched_at=rec.dispatched_at,
            assign_checked_at=rec.assign_checked_at,
            joined_at=rec.joined_at,
            voice_at=rec.voice_at,
            received_at=rec.received_at,
            event_at=rec.event_at,
            removal_pending=rec.removal_pending,
            ended_at=rec.ended_at,
            reason=_shared(rec.reason),
        )


def _shared(value: str | None) -> str | None:
    """One copy of a string many entries hold (pool, worker, replica ids; room names)."""
    return sys.intern(value) if value is not None else None


class RoomIndex:
    def __init__(self, assign_check_s: float = 8.0) -> None:
        # Plain tuples (an entry's fields), not entries: the garbage collector stops tracking an
        # exact tuple of plain values, never a tuple subclass (see RoomEntry).
        self._rooms: dict[str, tuple[Any, ...]] = {}
        # When each room next needs a look by the clock (orchestrator.wake.wake_at), as a heap with
        # lazy deletion (an entry counts while `_wake[room]` still says its time): the sweep pops
        # what is due instead of walking every live room.
        self._assign_check_s = assign_check_s
        self._wake: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._pushes = 0
        # The holding rooms by what can die under them: their pool, their worker, their job.
        # (Rooms as dict keys, not set members: a dict of strings is never tracked by the garbage
        # collector, a set always is, and a full collection walks every member of one.)
        self._on_pool: dict[str, dict[str, None]] = {}
        self._on_worker: dict[tuple[str, str], dict[str, None]] = {}
        self._by_job: dict[str, str] = {}
        # room -> pool chosen by this replica but not written yet. A replica decides many rooms
        # concurrently; without these holds, each decision would read the reservations from
        # before the others' writes landed and they would all herd onto the same pool.
        self._holds: dict[str, str] = {}
        # Reservations, kept as records change so a placement costs what is in flight, not what is
        # live: the reserving rooms whose job no heartbeat has listed yet (room -> pool, dispatch
        # id), their count per pool, and the dispatch ids of reserving rooms some heartbeat did list
        # (from then on the job is counted in `active`, or has ended: never a reservation again,
        # even before the record catches up). Of those, the ones whose worker has reported the job
        # (joined, speaking) are also counted per pool in `_reported`: see `in_flight`.
        self._unlisted: dict[str, tuple[str, str | None, bool]] = {}
        self._pending: Counter[str] = Counter()
        self._reported: Counter[str] = Counter()
        self._listed: set[str] = set()
        # Live rooms per state, kept as records come and go (the rooms gauge reads it for free).
        self._by_state: Counter[RoomState] = Counter()

    def hold(self, room: str, pool: str) -> None:
        """Count ``room`` against ``pool`` from now, before the record saying so is written."""
        self._holds[room] = pool

    def release(self, room: str) -> None:
        self._holds.pop(room, None)

    def apply(self, room: str, versioned: Versioned | None) -> None:
        """Record a change seen on the watch or written by us; older revisions never win."""
        held = self._holds.get(room)
        if held is not None and (versioned is None or versioned.record.pool == held):
            self._holds.pop(room)  # the written record now carries the reservation itself
        if versioned is None:
            self._forget(room, None)
            return
        current = self.get(room)
        if current is not None and current.revision >= versioned.revision:
            return
        if versioned.record.terminal and not versioned.record.removal_pending:
            # Terminal records stay in KV for `explain`, but nothing here needs them (one whose old
            # agent is not confirmed gone yet stays until the sweep has removed it).
            self._forget(room, None)
            return
        entry = RoomEntry.of(versioned)
        self._forget(room, entry)
        self._rooms[room] = tuple(entry)
        self._by_state[entry.state] += 1
        counted = reserving(entry)
        if counted is not None and (counted[1] is None or counted[1] not in self._listed):
            reported = entry.state in _REPORTED
            self._unlisted[room] = (*counted, reported)
            self._pending[counted[0]] += 1
            if reported:
                self._reported[counted[0]] += 1
        if entry.state in HOLDING and entry.pool is not None:
            self._on_pool.setdefault(entry.pool, {})[room] = None
            if entry.worker is not None:
                self._on_worker.setdefault((entry.pool, entry.worker), {})[room] = None
            if entry.dispatch_id is not None:
                self._by_job[entry.dispatch_id] = room
        self._schedule(room, wake_at(entry, assign_check_s=self._assign_check_s))

    def _forget(self, room: str, next_: RoomEntry | None) -> None:
        """Take ``room``'s entry out of the counts (``next_``: the entry replacing it)."""
        fields = self._rooms.pop(room, None)
        self._wake.pop(room, None)
        if fields is None:
            return
        old = RoomEntry._make(fields)
        self._by_state[old.state] -= 1
        if old.state in HOLDING and old.pool is not None:
            _discard(self._on_pool, old.pool, room)
            if old.worker is not None:
                _discard(self._on_worker, (old.pool, old.worker), room)
            if old.dispatch_id is not None and self._by_job.get(old.dispatch_id) == room:
                del self._by_job[old.dispatch_id]
        was = self._unlisted.pop(room, None)
        if was is not None:
            self._uncount(was[0], was[2])
        if old.dispatch_id is not None and old.dispatch_id in self._listed:
            still = reserving(next_) if next_ is not None else None
            if still is None or still[1] != old.dispatch_id:
                self._listed.discard(old.dispatch_id)

    # -- what the sweep looks at --------------------------------------------------------------------

    def _schedule(self, room: str, at: float | None) -> None:
        if at is None:
            return
        self._wake[room] = at
        self._pushes += 1
        heapq.heappush(self._heap, (at, self._pushes, room))

    def due_by_time(self, now: float, again_at: float | None = None) -> list[str]:
        """Rooms whose wake-up time has come. Each is armed again for ``again_at`` (default: the
        next call), in case it is still due then (a step in flight, a room waiting for a pool or
        handled by no one yet), until its record changes; the others are not seen again before
        their time."""
        rooms: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            at, _, room = heapq.heappop(self._heap)
            if self._wake.get(room) == at:
                rooms.append(room)
        again = again_at if again_at is not None and again_at > now else math.nextafter(now, math.inf)
        for room in rooms:
            self._schedule(room, again)
        if len(self._heap) > 2 * len(self._wake) + 64:
            # Mostly superseded entries (records change faster than their times come): rebuild.
            self._heap = [(at, i, room) for i, (room, at) in enumerate(self._wake.items())]
            heapq.heapify(self._heap)
        return rooms

    def next_wake(self) -> float | None:
        """The earliest wake-up time of any room (superseded entries dropped on the way)."""
        heap = self._heap
        while heap and self._wake.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pools_holding(self) -> list[str]:
        """Pools some room holds an agent (or a dispatch) on."""
        return list(self._on_pool)

    def holding_on(self, pool: str) -> set[str]:
        return set(self._on_pool.get(pool, ()))

    def workers_holding(self) -> list[tuple[str, str]]:
        """(pool, worker) pairs whose reports named them as a holding room's agent's worker."""
        return list(self._on_worker)

    def holding_with(self, pool: str, worker: str) -> set[str]:
        return set(self._on_worker.get((pool, worker), ()))

    def holding_job(self, dispatch_id: str) -> str | None:
        """The holding room whose dispatch this is."""
        return self._by_job.get(dispatch_id)

    def by_state(self) -> dict[str, int]:
        """Live rooms per non-terminal state (its value), zeros included."""
        return {state.value: self._by_state[state] for state in RoomState if state not in TERMINAL}

    def revision(self, room: str) -> int | None:
        """The revision of the room's entry; None when the index holds none."""
        fields = self._rooms.get(room)
        return fields[1] if fields is not None else None

    def get(self, room: str) -> RoomEntry | None:
        fields = self._rooms.get(room)
        return RoomEntry._make(fields) if fields is not None else None

    def live(self) -> Iterator[RoomEntry]:
        for fields in list(self._rooms.values()):
            yield RoomEntry._make(fields)

    def __len__(self) -> int:
        return len(self._rooms)

    def reserved(
        self, pool_jobs: Mapping[str, Container[str]], complete: Callable[[str], bool] | None = None
    ) -> dict[str, int]:
        """Per pool: rooms placed on it whose job its heartbeats do not show yet. Costs the rooms
        in flight (placed, job not yet listed) and this replica's holds, not the live rooms
        (``complete``: see :meth:`in_flight`)."""
        counts = self.in_flight(pool_jobs, complete)
        for room, pool in self._holds.items():
            current = self.get(room)
            if current is None or current.pool != pool or current.state not in _RESERVING:
                counts[pool] = counts.get(pool, 0) + 1
        return counts

    def in_flight(
        self, pool_jobs: Mapping[str, Container[str]], complete: Callable[[str], bool] | None = None
    ) -> dict[str, int]:
        """Per pool: the indexed rooms placed on it whose job its heartbeats do not list yet
        (what this replica reports to the others; holds not included).

        ``complete``: whether this replica knows every job list of the pool whole. A worker's long
        list comes whole only every few beats (``shared.heartbeat_jobs``), so a replica that just
        started (or took partitions over) knows it only from the next whole one; meanwhile a room
        whose worker has reported its job (joined, speaking) is not counted for a pool it does
        not know whole — the worker's beats count that job in ``active`` — instead of making the
        pool look full for seconds. Rooms still waiting for their job always count."""
        still: dict[str, tuple[str, str | None, bool]] = {}
        for room, (pool, dispatch_id, reported) in self._unlisted.items():
            if dispatch_id is not None and dispatch_id in pool_jobs.get(pool, ()):
                self._listed.add(dispatch_id)
                self._uncount(pool, reported)
            else:
                still[room] = (pool, dispatch_id, reported)
        # A new dict, not deletions: a dict never shrinks, and walking one that once held a burst
        # of rooms costs that burst's size on every call.
        self._unlisted = still
        counts = dict(self._pending)
        if complete is not None:
            for pool, n in self._reported.items():
                if not complete(pool):
                    counts[pool] -= n
                    if not counts[pool]:
                        del counts[pool]
        return counts

    def _uncount(self, pool: str, reported: bool) -> None:
        self._pending[pool] -= 1
        if not self._pending[pool]:
            del self._pending[pool]
        if reported:
            self._reported[pool] -= 1
            if not self._reported[pool]:
                del self._reported[pool]

    def written_elsewhere(self, room: str, pool: str | None) -> None:
        """A record of a room this index does not track was written with ``pool``: the hold
        taken for it has done its job (the record carries the reservation now)."""
        if pool is not None and self._holds.get(room) == pool:
            del self._holds[room]

    def drop(self, tracked: Callable[[str], bool]) -> int:
        """Forget the rooms no longer ``tracked`` (partitions this replica gave up); how many."""
        gone = [room for room in self._rooms if not tracked(room)]
        for room in gone:
            self._forget(room, None)
        if gone:
            self._heap = [(at, i, room) for i, (room, at) in enumerate(self._wake.items())]
            heapq.heapify(self._heap)
        return len(gone)


# States in which the worker has reported the room's job (it counts it in its beats' `active`).
_REPORTED = frozenset({RoomState.JOINED, RoomState.SPEAKING})


def reserving(rec: RoomView) -> tuple[str, str | None] | None:
    """(pool, dispatch id) of a record counted against its pool's headroom; None if it is not."""
    if rec.pool is None or rec.state not in _RESERVING:
        return None
    return rec.pool, rec.dispatch_id


def _discard(by: dict[K, dict[str, None]], key: K, room: str) -> None:
    rooms = by.get(key)
    if rooms is not None:
        rooms.pop(room, None)
        if not rooms:
            del by[key]
