"""The job list in a worker's heartbeats: whole now and then, what changed in between.

A worker lists the dispatch ids of its jobs in every beat (the orchestrator releases a pool's
reservation once a beat lists the dispatch it made). Every orchestrator replica reads every beat,
so a worker of 1,000 jobs made each replica read 1,000 ids a second whatever changed (issue 15:
10 % of a core idle at 100,000 live rooms). :class:`JobListSender` sends a list of more than
:data:`SMALL` jobs whole every :data:`FULL_EVERY` beats, under an epoch of its own, and in between
only the ids added and removed since the previous beat sent; the registry
(``orchestrator/pools.py``) applies a delta only on top of the very beat it names, and otherwise
holds the worker's list as incomplete until the next whole one. Short lists always go whole and
without the new fields: the beat a build before them sends and reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from shared.messages import JobsDelta

# Lists up to this long go whole (what a typical voice worker, capacity 4-25, always sends).
SMALL = 32
# A whole list at least every this many beats: a replica started since, or one that missed a
# beat, has a complete list again within that many seconds.
FULL_EVERY = 10
MAX_IDS = 1000  # PoolHeartbeat.jobs holds at most that many


class JobListSender:
    def __init__(self, epoch: str | None = None) -> None:
        self.epoch = epoch or uuid.uuid4().hex[:16]
        self._base: tuple[int, frozenset[str]] | None = None  # (seq, ids) of the last beat sent
        self._pending: tuple[int, frozenset[str]] | None = None
        self._deltas = 0  # deltas since the last whole list

    def fields(self, seq: int, jobs: Sequence[str]) -> dict[str, Any]:
        """The job fields of beat ``seq`` (``jobs``, and ``jobs_epoch`` / ``jobs_delta`` for a long
        list); call :meth:`sent` once it is published, :meth:`lost` if it was not."""
        listed = list(jobs[:MAX_IDS])
        ids = frozenset(listed)
        if len(listed) <= SMALL:
            self._pending, self._deltas = None, 0  # no epoch: the next long list goes whole
            return {"jobs": listed}
        base = self._base
        if base is not None and self._deltas < FULL_EVERY - 1:
            added, removed = sorted(ids - base[1]), sorted(base[1] - ids)
            if len(added) + len(removed) < len(listed):
                self._pending = (seq, ids)
                self._deltas += 1
                delta = JobsDelta(base=base[0], added=added, removed=removed)
                return {"jobs": [], "jobs_epoch": self.epoch, "jobs_delta": delta}
        self._pending, self._deltas = (seq, ids), 0
        return {"jobs": listed, "jobs_epoch": self.epoch}

    def sent(self) -> None:
        self._base = self._pending

    def lost(self) -> None:
        """The beat did not go out: the next one is whole (a delta on it would name a beat no
        replica saw)."""
        self._base = self._pending = None
        self._deltas = 0
