"""The pool registry: what the worker heartbeats say about each pool, aggregated per pool.

A pool is the set of worker processes sharing one pool id (one LiveKit ``agent_name``, one region,
one agent). Each worker beats about once a second; the registry keeps the latest beat per worker
and folds the live ones into the scheduler's :class:`~orchestrator.scheduler.model.PoolView` per
pool.

Pure bookkeeping: the caller passes ``now`` (monotonic seconds) into every time-dependent call, so
liveness transitions are unit-testable with plain numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from orchestrator.scheduler.model import Liveness, PoolView
from shared.config import PinnedPool
from shared.messages import PoolHeartbeat, PoolSummary
from shared.subjects import pool_agent_name

# Hearing silence after which the orchestrator's sweep forgets a worker (PoolRegistry.prune): long
# after its pool was judged dead and its rooms moved, short enough that worker ids of past deploys
# do not pile up.
FORGET_AFTER_S = 600.0


@dataclass(slots=True)
class _HearingClock:
    """Runs with real time while beats arrive, and gains at most ``max_gap_s`` across a gap in
    which none arrived (see :class:`PoolRegistry`)."""

    max_gap_s: float
    value: float = 0.0  # the clock at the last beat
    last_beat_at: float | None = None  # wall (monotonic) time of the last beat

    def at(self, now: float) -> float:
        if self.last_beat_at is None:
            return self.value
        return self.value + min(max(0.0, now - self.last_beat_at), self.max_gap_s)

    def beat(self, now: float) -> float:
        self.value = self.at(now)
        self.last_beat_at = max(now, self.last_beat_at or now)
        return self.value


@dataclass(slots=True)
class _RegionHearing:
    """A region's own hearing clock, and where the registry's clock stood at its last beat."""

    clock: _HearingClock
    overall_at: float = 0.0


@dataclass(slots=True)
class _Worker:
    beat: PoolHeartbeat
    seen_at: float  # wall (monotonic) time of the beat's arrival, for ages shown to people
    heard_at: float  # the registry's hearing clock at its arrival (pruning; local pools' liveness)
    # Its region's hearing clock at its arrival: a foreign pool's liveness (see PoolRegistry).
    region_heard_at: float = 0.0
    foreign: bool = False  # its region is not this replica's (the beat crossed a NATS gateway)
    jobs: frozenset[str] = frozenset()  # its job ids: the last whole list with the deltas since
    # False from a delta that does not apply on top of the beat it names (a beat missed, a replica
    # started since the last whole list) until the next whole list: ``jobs`` is then the last known.
    complete: bool = True
    # Its NATS connection was seen gone (a presence probe NATS answered "no responders") while its
    # beats were late: dead at once, without waiting out the missed beats. A new beat revives it.
    gone: bool = False


@dataclass(slots=True)
class _Identity:
    agent: str
    region: str
    agent_name: str


class ListedJobs(AbstractSet[str]):
    """The job (dispatch) ids a pool's live workers listed in their last beats, as a read-only set
    over the registry's job map: membership is one lookup, whatever the pool's size (a view is
    taken per placement, and each room in flight asks whether its job is listed yet)."""

    __slots__ = ("_alive", "_owner", "_pool")

    def __init__(self, owner: Mapping[str, tuple[str, str, int]], pool: str, alive: AbstractSet[str]) -> None:
        self._owner = owner
        self._pool = pool
        self._alive = alive

    def __contains__(self, item: object) -> bool:
        owner = self._owner.get(item) if isinstance(item, str) else None
        return owner is not None and owner[0] == self._pool and owner[1] in self._alive

    def __iter__(self) -> Iterator[str]:
        return (job for job in list(self._owner) if job in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"ListedJobs({sorted(self)!r})"

    __hash__ = AbstractSet._hash


class PoolRegistry:
    """Latest heartbeat per worker, folded into per-pool views.

    A worker is dead once ``dead_after_missed_beats * heartbeat_interval_s`` seconds of *hearing*
    have passed since its last beat; a pool is dead when none of its workers is alive. Not
    thread-safe: one owner (the orchestrator's event loop) feeds and reads it.

    Silence only counts while this observer demonstrably hears. Its hearing clock runs with real
    time while beats from any worker keep arriving, and gains at most one heartbeat interval across
    a gap in which it heard nothing at all. Such a gap means the observer could not listen (its
    NATS connection dropped; its loop was starved or CPU-throttled and the beats queued unread) or
    every worker went quiet at once (their NATS link, not necessarily their rooms). Judged by wall
    time, each of those declared every live pool dead and failover pulled agents out of rooms that
    were fine (seen in the drills: a NATS restart; a 200-room burst on 2 cores). So while nothing
    is heard, nothing dies; one pool dying among live ones is still seen after ``dead_after_s``.
    ``age_s`` in the views stays wall time, so ``status`` shows the silence as it is.

    Across regions (``home_region`` set: this replica's region, its NATS cluster; the others' beats
    cross gateways), the same rule holds per region. A *foreign* pool's silence is measured on its
    region's own hearing clock, which stops when the whole region goes quiet: a cut gateway, or
    that region's NATS down, silences every pool there at once, and none of them dies of it. One
    pool dying among its region's live ones is still seen after ``dead_after_s``. A region silent
    as a whole while this replica hears others is *lost* only after ``region_lost_after_s`` of
    hearing; then its pools are dead and their rooms go abroad. Without ``home_region`` (one NATS
    cluster for every pool) every pool is local, as before.
    """

    def __init__(
        self,
        heartbeat_interval_s: float,
        dead_after_missed_beats: int,
        pinned: Iterable[PinnedPool] = (),
        *,
        home_region: str | None = None,
        region_lost_after_s: float = 30.0,
    ) -> None:
        if heartbeat_interval_s <= 0 or dead_after_missed_beats < 1:
            raise ValueError("heartbeat_interval_s must be > 0 and dead_after_missed_beats >= 1")
        self.dead_after_s = heartbeat_interval_s * dead_after_missed_beats
        self.home_region = home_region
        # Never sooner than a pool's own death: a region is lost when its pools would be dead anyway.
        self.region_lost_after_s = max(region_lost_after_s, self.dead_after_s)
        self._clock = _HearingClock(heartbeat_interval_s)  # hears every region
        self._regions: dict[str, _RegionHearing] = {}
        self._workers: dict[str, dict[str, _Worker]] = {}
        # job id -> (pool, worker of the last beat listing it, how many workers' lists hold it),
        # kept by each beat's difference. ("", "", n): its last lister dropped it, n others hold it.
        self._job_owner: dict[str, tuple[str, str, int]] = {}
        self._identity: dict[str, _Identity] = {}
        self._pinned: set[str] = set()
        self._operator_drained: set[str] = set()
        for pin in pinned:
            self._pinned.add(pin.id)
            self._identity[pin.id] = _Identity(pin.agent, pin.region, pool_agent_name(pin.agent, pin.id))

    # -- feeding ---------------------------------------------------------------------------------

    def observe(self, hb: PoolHeartbeat, now: float) -> None:
        """Record a worker's beat. The latest arrival wins (core NATS keeps one publisher's order)."""
        heard = self._clock.beat(now)
        region = self._regions.get(hb.region)
        if region is None:
            region = self._regions[hb.region] = _RegionHearing(_HearingClock(self._clock.max_gap_s))
        region_heard = region.clock.beat(now)
        region.overall_at = heard
        foreign = self.home_region is not None and hb.region != self.home_region
        workers = self._workers.setdefault(hb.pool, {})
        before = workers.get(hb.worker)
        owner = (hb.pool, hb.worker)
        known = before.jobs if before is not None else frozenset()
        delta = hb.jobs_delta
        if delta is None:
            jobs, complete = frozenset(hb.jobs), True
            self._list_jobs(owner, known, jobs)
        elif (
            before is not None
            and before.complete
            and before.beat.jobs_epoch == hb.jobs_epoch
            and before.beat.seq == delta.base
        ):
            jobs, complete = known, True
            if delta.added or delta.removed:
                jobs = known.difference(delta.removed).union(delta.added)
                self._list_jobs(owner, known, jobs, delta.added, delta.removed)
        else:
            jobs, complete = known, False  # the last known, until the next whole list
        workers[hb.worker] = _Worker(hb, now, heard, region_heard, foreign, jobs, complete)
        # The pool's identity follows its newest beat: a redeployed pool may legitimately move.
        self._identity[hb.pool] = _Identity(hb.agent, hb.region, hb.agent_name)

    def _list_jobs(
        self,
        owner: tuple[str, str],
        before: frozenset[str],
        now: frozenset[str],
        added: Iterable[str] | None = None,
        removed: Iterable[str] | None = None,
    ) -> None:
        """The job map after a worker's list went from ``before`` to ``now`` (``added`` and
        ``removed``, when the beat said them, spare working the difference out)."""
        if added is None or removed is None:
            if before == now:
                return
            added, removed = now - before, before - now
        jobs = self._job_owner
        for job in added:
            if job not in before:
                entry = jobs.get(job)
                jobs[job] = (*owner, 1 if entry is None else entry[2] + 1)
        for job in removed:
            entry = jobs.get(job)
            if entry is None or job not in before or job in now:
                continue
            if entry[2] <= 1:
                del jobs[job]
            else:
                jobs[job] = (*(("", "") if entry[:2] == owner else entry[:2]), entry[2] - 1)

    def forget_worker(self, pool: str, worker: str) -> bool:
        """Drop one worker. True if it was known.

        Once a pool's last worker is gone the pool is forgotten too (its view is None, which the
        controller treats like a dead pool), operator drain included: a replica started since never
        knew that drain either. A pinned pool keeps its identity and shows as dead.
        """
        workers = self._workers.get(pool)
        gone = workers.pop(worker, None) if workers is not None else None
        if workers is None or gone is None:
            return False
        self._list_jobs((pool, worker), gone.jobs, frozenset())
        if not workers:
            del self._workers[pool]
            self._operator_drained.discard(pool)
            if pool not in self._pinned:
                self._identity.pop(pool, None)
        return True

    def prune(self, now: float, forget_after_s: float) -> list[str]:
        """Forget workers silent for ``forget_after_s`` (≥ the dead limit); returns ``pool/worker``.

        Pod names change on every deploy, so without pruning the registry would grow forever.
        Silence is measured on the hearing clock, like death: a replica that hears nothing at all
        forgets nobody.
        """
        limit = max(forget_after_s, self.dead_after_s, self.region_lost_after_s)
        heard = self._heard(now)  # this replica's clock, for every worker: a lost region is forgotten too
        gone = [
            (pool, worker)
            for pool, workers in self._workers.items()
            for worker, w in workers.items()
            if heard - w.heard_at >= limit
        ]
        for pool, worker in gone:
            self.forget_worker(pool, worker)
        return [f"{pool}/{worker}" for pool, worker in gone]

    def mark_draining(self, pool: str) -> None:
        """Operator drain: schedule nothing new onto ``pool`` from now on, whatever it reports."""
        self._operator_drained.add(pool)

    # -- reading ---------------------------------------------------------------------------------

    def _heard(self, now: float) -> float:
        """The hearing clock at ``now``: real time since the last beat, but at most one interval."""
        return self._clock.at(now)

    def _silence(self, w: _Worker, now: float) -> float:
        """Hearing since the worker's last beat: on this replica's clock for a local worker, on
        its region's for a foreign one (what pool death is judged on)."""
        if w.foreign:
            return self._regions[w.beat.region].clock.at(now) - w.region_heard_at
        return self._clock.at(now) - w.heard_at

    def region_lost(self, region: str, now: float) -> bool:
        """A foreign region silent as a whole for ``region_lost_after_s`` while this replica heard."""
        r = self._regions.get(region)
        if r is None or self.home_region is None or region == self.home_region:
            return False
        return self._clock.at(now) - r.overall_at >= self.region_lost_after_s

    def _alive(self, w: _Worker, now: float) -> bool:
        if w.gone or self._silence(w, now) >= self.dead_after_s:
            return False
        # A foreign worker silent for region_lost_after_s on this replica's clock is dead: its
        # region was lost while it was silent, whether or not the region has come back without it.
        return not (w.foreign and self._clock.at(now) - w.heard_at >= self.region_lost_after_s)

    def late_workers(self, now: float, late_after_s: float) -> list[tuple[str, str, float]]:
        """``(pool, worker, seen_at)`` of the live workers silent (on the hearing clock) for at
        least ``late_after_s``: the ones a presence probe may find gone."""
        return [
            (pool, worker, w.seen_at)
            for pool, workers in self._workers.items()
            for worker, w in workers.items()
            if self._alive(w, now) and self._silence(w, now) >= late_after_s
        ]

    def worker_draining(self, pool: str, worker: str) -> bool:
        """The worker's last beat said it was draining, or an operator drained its pool."""
        w = self._workers.get(pool, {}).get(worker)
        return pool in self._operator_drained or (w is not None and w.beat.draining)

    def knows(self, pool: str, worker: str) -> bool:
        return worker in self._workers.get(pool, {})

    def mark_gone(self, pool: str, worker: str, seen_at: float, now: float) -> bool:
        """Declare the worker dead now: its connection is gone. Only if its last beat is still the
        one that arrived at ``seen_at`` (a beat since says it is back), and, for a foreign worker,
        only while its region is heard: NATS answers "no responders" for every subject behind a
        cut gateway, which says nothing about the worker. True if it was alive."""
        w = self._workers.get(pool, {}).get(worker)
        if w is None or w.gone or w.seen_at != seen_at:
            return False
        if w.foreign and not self._region_heard(w.beat.region, now):
            return False
        w.gone = True
        return True

    def _region_heard(self, region: str, now: float) -> bool:
        """Some worker of ``region`` beat within the last interval."""
        r = self._regions.get(region)
        if r is None or r.clock.last_beat_at is None:
            return False
        return now - r.clock.last_beat_at <= r.clock.max_gap_s

    def orphaned_jobs(self, now: float) -> frozenset[str]:
        """Dispatch ids the last beat of a now-dead worker listed, that no live worker lists: their
        agents died with the worker even when the pool lives on in its other workers (LiveKit never
        gives such a job to another worker). Judged on the hearing clock like pool death."""
        dead: list[_Worker] = []
        live: list[frozenset[str]] = []
        for workers in self._workers.values():
            for w in workers.values():
                if self._alive(w, now):
                    live.append(w.jobs)
                else:
                    dead.append(w)
        # Only dead workers' jobs are looked at (none, mostly): a sweep costs the dead, not the live.
        # A job only one worker lists (the job map counts them) is that dead worker's alone; one
        # listed by several (rare) is looked for in the live workers' lists.
        orphaned: set[str] = set()
        for w in dead:
            for job in w.jobs:
                entry = self._job_owner.get(job)
                if entry is None or entry[2] <= 1 or not any(job in jobs for jobs in live):
                    orphaned.add(job)
        return frozenset(orphaned)

    def worker_gone(self, pool: str, worker: str, now: float) -> bool:
        """The worker is dead, or unknown to a registry that has heard long enough to know every
        live worker (a replica started after the worker died never heard of it)."""
        w = self._workers.get(pool, {}).get(worker)
        if w is not None:
            return not self._alive(w, now)
        return self._heard(now) >= self.dead_after_s

    def unheard_s(self, now: float) -> float | None:
        """Seconds since any worker was last heard; None before the first beat."""
        last = self._clock.last_beat_at
        return None if last is None else max(0.0, now - last)

    def pool_dead(self, pool: str, now: float) -> bool:
        """What a view's ``None`` or ``dead`` liveness says (never heard of, or no live worker),
        asked per room step without building the view (a sum over the pool's workers)."""
        if pool not in self._identity:
            return True
        return not any(self._alive(w, now) for w in self._workers.get(pool, {}).values())

    def jobs_complete(self, pool: str, now: float) -> bool:
        """Whether every live worker's job list of the pool is whole (see :class:`_Worker`): a job
        missing from an incomplete one says nothing about its agent."""
        return all(w.complete for w in self._workers.get(pool, {}).values() if self._alive(w, now))

    def region(self, pool: str) -> str | None:
        """The region the pool's newest beat (or its pin) names; None for a pool never heard of."""
        ident = self._identity.get(pool)
        return ident.region if ident is not None else None

    def view(self, pool: str, now: float) -> PoolView | None:
        """The pool's view at ``now``; None for a pool the registry has never heard of."""
        ident = self._identity.get(pool)
        if ident is None:
            return None
        # One pass over the workers: a view is taken per placement, and a big pool has hundreds.
        heard, dead_after = self._heard(now), self.dead_after_s
        names: list[str] = []
        capacity = active = open_slots = 0
        every_live_draining = True
        newest: float | None = None  # the latest beat's arrival (the view's age)
        for w in self._workers.get(pool, {}).values():
            if newest is None or w.seen_at > newest:
                newest = w.seen_at
            if w.foreign:
                if not self._alive(w, now):
                    continue
            elif w.gone or heard - w.heard_at >= dead_after:  # as _alive, inlined for the common case
                continue
            b = w.beat
            names.append(b.worker)
            capacity += b.capacity
            active += b.active
            if not b.draining:
                every_live_draining = False
                open_slots += max(0, b.capacity - b.active)
        drained = bool(names) and (pool in self._operator_drained or every_live_draining)
        liveness: Liveness = "dead" if not names else ("draining" if drained else "alive")
        return PoolView(
            pool=pool,
            agent=ident.agent,
            region=ident.region,
            agent_name=ident.agent_name,
            workers=len(names),
            capacity=capacity,
            active=active,
            load=active / capacity if capacity else 1.0,
            draining=drained,
            liveness=liveness,
            age_s=max(0.0, now - newest) if newest is not None else None,
            jobs=ListedJobs(self._job_owner, pool, frozenset(names)),
            open_slots=open_slots if liveness == "alive" else 0,
            silent=liveness != "dead" and self._region_silent(ident.region, now),
        )

    def _region_silent(self, region: str, now: float) -> bool:
        """A foreign region unheard as a whole (on this replica's clock) for a pool's death limit."""
        r = self._regions.get(region)
        if r is None or self.home_region is None or region == self.home_region:
            return False
        return self._clock.at(now) - r.overall_at >= self.dead_after_s

    def listed_jobs(self, now: float) -> Mapping[str, Container[str]]:
        """Per pool, the jobs its live workers list, looked up job by job (nothing built): what a
        question about a few rooms in flight needs, without a view of every pool."""
        return _JobsByPool(self, now)

    def _lists(self, pool: str, job: str, now: float) -> bool:
        owner = self._job_owner.get(job)
        if owner is None or owner[0] != pool:
            return False
        w = self._workers.get(pool, {}).get(owner[1])
        return w is not None and self._alive(w, now)

    def snapshot(self, now: float) -> list[PoolView]:
        """Every known pool (heartbeating or pinned), sorted by pool id."""
        views = (self.view(pool, now) for pool in sorted(self._identity))
        return [v for v in views if v is not None]


class _PoolJobs(Container[str]):
    __slots__ = ("_now", "_pool", "_registry")

    def __init__(self, registry: PoolRegistry, pool: str, now: float) -> None:
        self._registry, self._pool, self._now = registry, pool, now

    def __contains__(self, job: object) -> bool:
        return isinstance(job, str) and self._registry._lists(self._pool, job, self._now)


class _JobsByPool(Mapping[str, Container[str]]):
    __slots__ = ("_now", "_registry")

    def __init__(self, registry: PoolRegistry, now: float) -> None:
        self._registry, self._now = registry, now

    def __getitem__(self, pool: str) -> Container[str]:
        if pool not in self._registry._identity:
            raise KeyError(pool)
        return _PoolJobs(self._registry, pool, self._now)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._registry._identity))

    def __len__(self) -> int:
        return len(self._registry._identity)


# What a census carries of a view: all but the job ids (the status table does not show them).
# (``silent`` is not carried either: a census entry of an older build's reader refuses unknown fields.)
_CARRIED = tuple(f.name for f in dataclasses.fields(PoolView) if f.name not in ("jobs", "silent"))


def summary(view: PoolView) -> PoolSummary:
    """``view`` on the wire (a part of the pool census a replica answers with)."""
    return PoolSummary(**{name: getattr(view, name) for name in _CARRIED})


def view_of(s: PoolSummary) -> PoolView:
    """A census entry back into the view ``status`` renders."""
    return PoolView(**s.model_dump())
