"""Every replica's in-memory view of all live room records, fed by a KV watch.

Timers, pool-death failover and reservation counts are computed from this view, so they survive
the replica that set them: the deadlines live in the records, and any replica's sweep acts on
them (compare-and-set decides which one wins).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from orchestrator.records import TERMINAL, RoomState
from orchestrator.store import Versioned

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


class RoomIndex:
    def __init__(self) -> None:
        self._rooms: dict[str, Versioned] = {}
        # room -> pool chosen by this replica but not written yet. A replica decides many rooms
        # concurrently; without these holds, each decision would read the reservations from
        # before the others' writes landed and they would all herd onto the same pool.
        self._holds: dict[str, str] = {}
        # Dispatch ids some heartbeat has listed: from then on the job is counted in `active`
        # (or has ended), never as a reservation again — even before the record catches up.
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
            self._forget(room)
            return
        current = self._rooms.get(room)
        if current is not None and current.revision >= versioned.revision:
            return
        if versioned.record.terminal and not versioned.record.removal_pending:
            # Terminal records stay in KV for `explain`, but nothing here needs them (one whose old
            # agent is not confirmed gone yet stays until the sweep has removed it).
            self._forget(room)
        else:
            self._forget(room)
            self._rooms[room] = versioned
            self._by_state[versioned.record.state] += 1

    def _forget(self, room: str) -> None:
        gone = self._rooms.pop(room, None)
        if gone is not None:
            self._by_state[gone.record.state] -= 1

    def by_state(self) -> dict[str, int]:
        """Live rooms per non-terminal state (its value), zeros included."""
        return {state.value: self._by_state[state] for state in RoomState if state not in TERMINAL}

    def get(self, room: str) -> Versioned | None:
        return self._rooms.get(room)

    def live(self) -> Iterator[Versioned]:
        yield from list(self._rooms.values())

    def __len__(self) -> int:
        return len(self._rooms)

    def reserved(self, pool_jobs: dict[str, frozenset[str]]) -> dict[str, int]:
        """Per pool: rooms placed on it whose job its heartbeats do not show yet."""
        counts: dict[str, int] = {}
        live_ids: set[str] = set()
        for v in self._rooms.values():
            rec = v.record
            if rec.pool is None or rec.state not in _RESERVING:
                continue
            if rec.dispatch_id is not None:
                live_ids.add(rec.dispatch_id)
                if rec.dispatch_id in pool_jobs.get(rec.pool, frozenset()):
                    self._listed.add(rec.dispatch_id)
                    continue
                if rec.dispatch_id in self._listed:
                    continue  # its job ran and ended; the record has not caught up yet
            counts[rec.pool] = counts.get(rec.pool, 0) + 1
        self._listed &= live_ids  # forget rooms that left the index
        for room, pool in self._holds.items():
            current = self._rooms.get(room)
            if current is None or current.record.pool != pool or current.record.state not in _RESERVING:
                counts[pool] = counts.get(pool, 0) + 1
        return counts
