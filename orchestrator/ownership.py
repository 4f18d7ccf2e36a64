"""The partitions this replica tracks, as the membership says now, and what it tells the others.

A replica tracks a room (keeps it in its index: its timers, its failover, its resync) when the
room's partition is assigned to it (:func:`orchestrator.partitions.assign` over the live
members). It still handles events and reports for any room — the record is read from KV — and
counts the rooms it places in other replicas' partitions until their trackers report them
(:class:`~orchestrator.peer_reservations.PeerReservations`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orchestrator.index import RoomIndex, reserving
from orchestrator.membership import member_id
from orchestrator.partitions import assign, owned_by, partition_of
from orchestrator.peer_reservations import PeerReservations
from orchestrator.store import Versioned
from shared.messages import ReservationsReport

log = logging.getLogger(__name__)


class Ownership:
    def __init__(self, replica: str, index: RoomIndex, stale_s: float, mono: Callable[[], float]) -> None:
        self.me = member_id(replica)
        self.index = index
        self.peers = PeerReservations(self.me, stale_s, mono)
        self.owned: frozenset[int] = frozenset()
        self.members: frozenset[str] = frozenset()
        # Per tracked partition: the KV revision its watch has taken up to.
        self.applied: dict[int, int] = {}
        self.changed = asyncio.Event()

    @property
    def joined(self) -> bool:
        """This replica is a live member (its own key came back on the watch)."""
        return self.me in self.members

    def tracks(self, room: str) -> bool:
        return partition_of(room) in self.owned

    def on_members(self, members: frozenset[str]) -> None:
        self.members = members
        owned = owned_by(assign(members), self.me) if self.me in members else frozenset()
        if owned != self.owned:
            gained, lost = sorted(owned - self.owned), sorted(self.owned - owned)
            log.info(
                "tracking %d of the rooms' partitions (gained %s, gave up %s)",
                len(owned),
                gained or "none",
                lost or "none",
            )
            self.owned = owned
            self.changed.set()

    def wrote(self, versioned: Versioned) -> None:
        """A record this replica wrote: into the index if tracked, else counted until its
        tracker reports it."""
        room = versioned.record.room
        if self.tracks(room):
            self.index.apply(room, versioned)
            return
        self.index.written_elsewhere(room, versioned.record.pool)
        self.peers.wrote(versioned, reserving(versioned.record))

    def report(self, in_flight: dict[str, int]) -> ReservationsReport:
        return ReservationsReport(
            replica=self.me,
            reserved=in_flight,
            applied={str(p): rev for p, rev in self.applied.items() if p in self.owned},
        )
