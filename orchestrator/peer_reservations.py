"""Reservations across replicas: each tracks the in-flight rooms of its own partitions only, so
a placement adds what the others report (:class:`~shared.messages.ReservationsReport`) and the
rooms this replica placed in partitions it does not track, until their tracker's report covers
them (its watch has taken the write: its ``applied`` revision for the partition is past it).

Reservations are a guard against herding, not a limit (a worker refuses a job it has no room
for), so counting a room twice for a moment errs on the safe side, and a peer's report is dropped
once it is older than ``stale_s`` (the peer died or left).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container, Mapping
from typing import NamedTuple

from orchestrator.partitions import partition_of
from orchestrator.store import Versioned
from shared.messages import ReservationsReport

# A room placed in another replica's partition is counted here at most this long (its tracker
# reports every second; this covers a tracker that died before it did).
FOREIGN_S = 10.0


class _Peer(NamedTuple):
    reserved: Mapping[str, int]
    applied: Mapping[int, int]
    at: float


class _Foreign(NamedTuple):
    pool: str
    dispatch_id: str | None
    partition: int
    revision: int
    at: float


class PeerReservations:
    def __init__(self, me: str, stale_s: float, mono: Callable[[], float]) -> None:
        self.me = me
        self.stale_s = stale_s
        self._mono = mono
        self._peers: dict[str, _Peer] = {}
        self._foreign: dict[str, _Foreign] = {}

    def on_report(self, report: ReservationsReport) -> None:
        if report.replica == self.me:
            return
        applied = {int(p): rev for p, rev in report.applied.items() if p.isdigit()}
        self._peers[report.replica] = _Peer(report.reserved, applied, self._mono())
        if self._foreign:
            self._foreign = {
                room: f for room, f in self._foreign.items() if applied.get(f.partition, 0) < f.revision
            }

    def wrote(self, versioned: Versioned, reserving: tuple[str, str | None] | None) -> None:
        """This replica wrote a room it does not track; ``reserving``: (pool, dispatch id) while
        the record counts against a pool (see :mod:`orchestrator.index`), else None."""
        room = versioned.record.room
        if reserving is None:
            self._foreign.pop(room, None)
            return
        pool, dispatch_id = reserving
        at = self._mono()
        self._foreign[room] = _Foreign(pool, dispatch_id, partition_of(room), versioned.revision, at)

    def reserved(self, pool_jobs: Mapping[str, Container[str]]) -> Counter[str]:
        """Per pool: the peers' reported rooms in flight plus ours in their partitions."""
        now = self._mono()
        counts: Counter[str] = Counter()
        for replica, peer in list(self._peers.items()):
            if now - peer.at > self.stale_s:
                del self._peers[replica]
                continue
            counts.update(peer.reserved)
        if self._foreign:
            still: dict[str, _Foreign] = {}
            for room, f in self._foreign.items():
                listed = f.dispatch_id is not None and f.dispatch_id in pool_jobs.get(f.pool, ())
                if listed or now - f.at > FOREIGN_S:
                    continue
                still[room] = f
                counts[f.pool] += 1
            self._foreign = still
        return counts

    def __len__(self) -> int:
        """Rooms in other replicas' partitions this replica still counts itself."""
        return len(self._foreign)
