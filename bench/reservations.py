"""A per-process book of slots promised to dispatches that the pool heartbeats do not show yet.

The running orchestrator does not keep this book: it derives reservations from the room records
every replica watches (``RoomIndex.reserved`` plus its in-replica holds), so all replicas count
the same reservations. This book models a replica that only knows its own promises; the scheduler
benchmark uses it to show how such replicas herd (bench/scheduler_bench.py).

Between two heartbeats a burst of rooms would all see the same ``active`` count and pile onto the
same pool. So a slot is reserved at the decision, and gives it back when the pool's
heartbeat lists the dispatch (the job is now counted in ``active``), when the dispatch fails or the
room ends, or when the reservation outlives a TTL (the job never showed up).

Keyed by the *dispatch key* (``<room>/<attempt>``, known before CreateDispatch); the LiveKit dispatch
id is bound once CreateDispatch answers, because heartbeats list dispatch ids. Pure: ``now`` is an
argument, no clock is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class _Reservation:
    pool: str
    made_at: float
    dispatch_id: str | None = None


class Reservations:
    """Outstanding reservations per pool; ``counts()`` feeds the scheduler's ``reserved`` argument."""

    def __init__(self) -> None:
        self._by_key: dict[str, _Reservation] = {}
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def reserve(self, pool: str, dispatch_key: str, now: float) -> None:
        """Hold one slot on ``pool`` for ``dispatch_key``. Idempotent; a new pool moves the hold."""
        old = self._by_key.get(dispatch_key)
        if old is not None:
            if old.pool == pool:
                return
            self._drop(dispatch_key)
        self._by_key[dispatch_key] = _Reservation(pool, now)
        self._counts[pool] = self._counts.get(pool, 0) + 1

    def bind(self, dispatch_key: str, dispatch_id: str) -> bool:
        """Attach the LiveKit dispatch id so a heartbeat listing it can release the hold."""
        res = self._by_key.get(dispatch_key)
        if res is None:
            return False
        res.dispatch_id = dispatch_id
        return True

    def release(self, dispatch_key: str) -> bool:
        """Give the slot back (dispatch failed, room ended). True if it was held."""
        return self._drop(dispatch_key) is not None

    def reconcile(self, pool: str, jobs_seen: frozenset[str], now: float) -> list[str]:
        """Release the holds on ``pool`` whose dispatch id the pool now reports as a job.

        ``jobs_seen`` is the pool's :attr:`PoolView.jobs` (or one worker's beat). ``now`` is unused
        by this policy; it is part of the signature so a time-aware policy needs no caller change.
        Returns the released dispatch keys, sorted.
        """
        del now
        done = sorted(
            key
            for key, res in self._by_key.items()
            if res.pool == pool and res.dispatch_id is not None and res.dispatch_id in jobs_seen
        )
        for key in done:
            self._drop(key)
        return done

    def expire(self, now: float, ttl: float) -> list[str]:
        """Release holds older than ``ttl`` seconds (age ≥ ttl); returns their keys, sorted.

        Pick ``ttl`` above the join deadline plus a few beats: a slow job start must not free its
        slot early, and a lost one must not hold it forever.
        """
        old = sorted(key for key, res in self._by_key.items() if now - res.made_at >= ttl)
        for key in old:
            self._drop(key)
        return old

    def pool_of(self, dispatch_key: str) -> str | None:
        res = self._by_key.get(dispatch_key)
        return res.pool if res is not None else None

    def count(self, pool: str) -> int:
        return self._counts.get(pool, 0)

    def counts(self) -> Mapping[str, int]:
        """A copy of the per-pool hold counts (only pools with holds appear)."""
        return dict(self._counts)

    def _drop(self, dispatch_key: str) -> _Reservation | None:
        res = self._by_key.pop(dispatch_key, None)
        if res is not None:
            left = self._counts[res.pool] - 1
            if left:
                self._counts[res.pool] = left
            else:
                del self._counts[res.pool]
        return res
