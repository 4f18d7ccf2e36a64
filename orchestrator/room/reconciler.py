"""The room reconciler: read the record, decide (pure), write, perform one effect, repeat.

``_drive`` is the one loop every input goes through — a room event, an agent's report, the sweep.
Each turn asks :func:`orchestrator.room.decide.decide` for a :class:`Step`, writes its record
with compare-and-set (the intent), then performs its effect (:mod:`orchestrator.room.effects`)
and feeds the outcome to the next decision. A lost compare-and-set re-reads the record and
decides again with the same fact. A crash at any line leaves a record whose next reader, on any
replica, resumes without acting twice: claims expire, a dispatch step looks before it creates,
and a replaced agent stays listed until LiveKit confirms it gone.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from orchestrator.index import RoomIndex
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.ownership import Ownership
from orchestrator.pools import PoolRegistry
from orchestrator.records import HOLDING, RoomRecord, RoomView
from orchestrator.room.decide import (
    Context,
    decide,
    incarnation,
    is_new_incarnation,
    needs_placement,
    new_record,
    superseding,
    tombstone,
    wrongly_ended,
)
from orchestrator.room.effects import Effects, Listed, RetryPolicy
from orchestrator.room.facts import Claimed, Ended, Fact, PlaceInput, Report
from orchestrator.room.lease import Lease
from orchestrator.room.locks import RoomLocks
from orchestrator.room.observe import Observer, room_span, scheduled, trace_fields
from orchestrator.room.ports import LiveKit, RecordStore
from orchestrator.room.step import EnsureDispatch, Step
from orchestrator.room.sweep import Sweep
from orchestrator.scheduler import Topology, decision_seed
from orchestrator.scheduler.model import PoolView
from orchestrator.store import Conflict, Versioned
from shared.config import SwitchboardConfig
from shared.logs import log_context
from shared.messages import AgentStatus, RoomCreated, RoomEnded

log = logging.getLogger(__name__)

_NOT_NEW = {
    "same": "duplicate (the room has a record)",
    "newer": "duplicate (the room has a record)",
    "older": "an older room of this name",
    "ghost": "a room our own CreateDispatch created after the room it was for had ended",
}

# Lost compare-and-sets one input tolerates before it is handed back (a message is redelivered;
# the sweep comes back to the room): only a room written by others that often gets here.
MAX_CONFLICTS = 5
# Turns of the loop per input: a room needs at most about six (remove, place, claim, dispatch,
# dispatched, check); more means two decisions undo each other, which must not spin.
MAX_TURNS = 16
# The revision of a record the loop is to create (KV revisions start at 1).
UNSTORED = 0


class RecordExists(Exception):
    """The room has a record already: the event that would create one is a duplicate, an older
    room's, or a newer room's (decided by the caller from the record found)."""


@dataclass(frozen=True, slots=True)
class Clocks:
    """Wall clock for deadlines shared through KV; monotonic clock for heartbeat ages."""

    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic


class Reconciler:
    def __init__(
        self,
        *,
        store: RecordStore,
        gateway: LiveKit,
        config: SwitchboardConfig,
        registry: PoolRegistry,
        index: RoomIndex,
        replica: str,
        clocks: Clocks | None = None,
        metrics: OrchestratorMetrics | None = None,
        rng: random.Random | None = None,
        ownership: Ownership | None = None,
        state_region: str | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.cfg = config.orchestrator
        self.registry = registry
        self.index = index
        # Which rooms this replica tracks in its index (None: every room, a lone replica).
        self.ownership = ownership
        self.replica = replica
        self.clocks = clocks or Clocks()
        self.topology = Topology.from_config(config)
        self.locks = RoomLocks()
        self.observer = Observer(metrics)
        # Lease on an in-flight step: longer than one full CreateDispatch round.
        self.lease_s = self.cfg.dispatch_deadline_s + 5.0
        self._rng = rng or random.Random()
        self._decisions = 0
        self.effects = Effects(
            gateway,
            mono=self.clocks.mono,
            rng=self._rng,
            retry=RetryPolicy(deadline_s=self.cfg.dispatch_deadline_s),
            region_of=self._pool_region,
            observer=self.observer,
            state_region=state_region,
        )
        self._sweep = Sweep(self)

    # -- inputs ----------------------------------------------------------------------------------

    async def on_room_created(
        self,
        event: RoomCreated,
        origin: str = "event",
        occupied: Callable[[], Awaitable[bool]] | None = None,
    ) -> bool:
        """Open the room's record (``origin``: its event, or the resync); False when the record
        of this room was already there (a duplicate, an older room, our own ghost). ``occupied``
        (the resync's): asked when the room is our ghost, whether a caller is in it now, which
        makes it a room to serve."""
        record = new_record(event, self._ctx(), trace_fields(), origin)
        async with self.locks.hold(event.room):
            try:
                # The record is created by the loop's first write, placed already (one write,
                # not a `received` record and then its placement).
                await self._drive(Versioned(record, UNSTORED), None)
            except RecordExists:
                existing = await self.read(event.room)
                if existing is None:
                    raise Conflict(event.room) from None  # deleted in between: the redelivery creates
                revive = origin == "resync" and wrongly_ended(
                    existing.record, event, record.received_at, self.cfg.resync_grace_s
                )
                kind = incarnation(existing.record, event)
                taken = kind == "ghost" and occupied is not None and await occupied()
                if taken:
                    record = new_record(event, self._ctx(), trace_fields(), origin, occupied=True)
                if not is_new_incarnation(existing.record, event, taken) and not revive:
                    log.info("room event ignored: %s", _NOT_NEW[kind], extra={"room": event.room})
                    return False
                if kind == "newer" and event.sid is not None and not revive:
                    ghost = await self.effects.ghost_of(event.room, event.sid)
                    if isinstance(ghost, Listed):
                        log.info(
                            "room event ignored: LiveKit lists another room (%s) under the name now",
                            ghost.sid,
                            extra={"room": event.room},
                        )
                        return False
                    if ghost is not None:
                        await self._drive(existing, ghost)  # remembered: never served on its event
                        log.info("room event ignored: %s", _NOT_NEW["ghost"], extra={"room": event.room})
                        return False
                # Same name, new LiveKit room: start over; the old room's agent goes first.
                created = await self.store.update(superseding(record, existing.record), existing.revision)
                self.seen(created)
                await self._drive(created, None)
            if origin == "resync":
                self.observer.reconciled("found")
            return True

    async def on_room_ended(self, event: RoomEnded, published_at: float | None = None) -> None:
        async with self.locks.hold(event.room):
            current = await self.read(event.room)
            if current is None:
                created = await self.store.create(tombstone(event, self._ctx(), published_at))
                if created is not None:
                    self.seen(created)
                    log.info("room ended before its start was seen", extra={"room": event.room})
                    return
                current = await self.read(event.room)  # created meanwhile: end that one
                if current is None:
                    return  # a key deleted by hand: nothing to end, nothing to keep
            await self._drive(current, Ended(event, published_at))

    async def on_status(self, status: AgentStatus, draining: bool = False) -> None:
        """A worker's report; ``draining``: that worker's last beat said it was draining."""
        await self.on_fact(status.room, Report(status, draining))

    async def sweep(self, concurrency: int = 32) -> None:
        """One pass of the sweep, its steps awaited (tests)."""
        await self._sweep.run(concurrency)

    def poke_sweep(self) -> None:
        """A pool or worker death is known now: the sweep looks at once (:meth:`Sweep.poke`)."""
        self._sweep.poke()

    async def sweep_loop(
        self, ready: Callable[[], bool], on_error: Callable[[Exception], None] | None = None
    ) -> None:
        """The sweep, until cancelled: each timer when it is due (:meth:`Sweep.loop`)."""
        await self._sweep.loop(ready, on_error=on_error)

    async def on_fact(self, room: str, fact: Fact) -> bool:
        """Decide ``fact`` about ``room`` (a report, a resync finding); whether its record changed."""
        async with self.locks.hold(room):
            current = await self.read(room)
            if current is None:
                log.info(
                    "%s for a room without a record ignored",
                    type(fact).__name__.lower(),
                    extra={"room": room},
                )
                return False
            return await self._drive(current, fact)

    async def reconcile(self, room: str) -> None:
        """Bring one room forward from its record alone (the sweep's entry)."""
        async with self.locks.hold(room):
            current = await self.read(room)
            if current is not None:
                await self._drive(current, None)

    # -- the loop --------------------------------------------------------------------------------

    async def _drive(self, current: Versioned, fact: Fact | None) -> bool:
        """Run the room forward from ``fact``; whether anything was written."""
        conflicts = 0
        wrote = False
        with contextlib.ExitStack() as spans:
            for _ in range(MAX_TURNS):
                rec = current.record
                with log_context(room=rec.room, pool=rec.pool, attempt=rec.attempt):
                    step = self._decide(rec, fact)
                    if step.record is None and current.revision == UNSTORED:
                        step = replace(step, record=rec)  # nothing to change, but still to create
                    if step.cause is not None:
                        span = spans.enter_context(room_span("redispatch", rec))
                        span.set_attribute("switchboard.redispatch.cause", step.cause)
                    if step.record is not None:
                        try:
                            current = await self._commit(current, step.record, step.hold)
                        except Conflict:
                            conflicts += 1
                            if conflicts >= MAX_CONFLICTS:
                                raise
                            fresh = await self.read(rec.room)
                            if fresh is None:
                                return wrote
                            current = fresh
                            continue  # the same fact, decided again on the fresh record
                        wrote = True
                    if step.effect is not None:
                        fact, current = await self._perform(step, current)
                        continue
                    if step.then is not None:
                        fact = step.then
                        continue
                    if step.record is None:
                        return wrote  # the room rests until an event, a report or a timer
                    fact = None  # written: look at what the new record needs
        log.warning("room %s: gave up after %d turns of one input", current.record.room, MAX_TURNS)
        return wrote

    def _decide(self, rec: RoomRecord, fact: Fact | None) -> Step:
        ctx = self._ctx()
        holding = rec.state in HOLDING
        pool_gone = holding and self.pool_gone(rec.pool)
        worker_gone = holding and self.worker_gone(rec)
        if (fact is None or isinstance(fact, Claimed)) and needs_placement(rec, ctx.now, self.replica):
            with room_span("schedule", rec) as span:
                step = decide(rec, fact, ctx, pool_gone=pool_gone, place=self._place_input(rec))
                if step.decision is not None:
                    scheduled(span, step.decision)
                return step
        return decide(rec, fact, ctx, pool_gone=pool_gone, worker_gone=worker_gone, place=None)

    async def _perform(self, step: Step, current: Versioned) -> tuple[Fact, Versioned]:
        """The step's effect, and the record as it stands after it (lease renewals write it)."""
        assert step.effect is not None
        lease = Lease(current, self.store, self.clocks.wall, self.lease_s, self.seen)
        if isinstance(step.effect, EnsureDispatch):
            with room_span("dispatch", current.record):
                outcome = await self.effects.run(step.effect, current.record, lease)
        else:
            outcome = await self.effects.run(step.effect, current.record, lease)
        return outcome, lease.current

    async def _commit(self, current: Versioned, new: RoomRecord, hold: str | None) -> Versioned:
        if hold is not None:
            # Count the room against the pool before the first await, so concurrent decisions of
            # this replica see it.
            self.index.hold(new.room, hold)
        try:
            if current.revision == UNSTORED:
                created = await self.store.create(new)
                if created is None:
                    raise RecordExists(new.room)
                written = self.seen(created)
            else:
                written = self.seen(await self.store.update(new, current.revision))
        except BaseException:
            if hold is not None:
                self.index.release(new.room)
            raise
        self.observer.committed(current.record, new, self.clocks.wall())
        return written

    # -- what decisions read ---------------------------------------------------------------------

    def _ctx(self) -> Context:
        return Context(
            now=self.clocks.wall(),
            replica=self.replica,
            config=self.config,
            topology=self.topology,
            lease_s=self.lease_s,
        )

    def _place_input(self, rec: RoomRecord) -> PlaceInput:
        pools = self.registry.snapshot(self.clocks.mono())
        return PlaceInput(pools=pools, reserved=self.reserved(pools), seed=self._next_seed(rec))

    def reserved(self, pools: Iterable[PoolView]) -> dict[str, int]:
        """Rooms in flight per pool: this replica's (its partitions, its holds) and the others'."""
        jobs = {p.pool: p.jobs for p in pools}
        mono = self.clocks.mono()
        counts = self.index.reserved(jobs, lambda pool: self.registry.jobs_complete(pool, mono))
        if self.ownership is not None:
            for pool, n in self.ownership.peers.reserved(jobs).items():
                counts[pool] = counts.get(pool, 0) + n
        return counts

    def tracks(self, room: str) -> bool:
        """Whether this replica's index holds ``room`` (its partition is this replica's)."""
        return self.ownership is None or self.ownership.tracks(room)

    def _next_seed(self, rec: RoomRecord) -> int:
        # Deterministic per room and attempt when a seed is configured (tests), varied otherwise;
        # decision_seed hashes with BLAKE2b, so replicas agree (hash() is randomised per process).
        self._decisions += 1
        base = self.cfg.seed if self.cfg.seed is not None else self._rng.getrandbits(62) + self._decisions
        return decision_seed(base, rec.room, rec.attempt)

    def pool_gone(self, pool: str | None) -> bool:
        """A pool the registry does not know (any more) or hears nothing from: its rooms fail over."""
        return pool is not None and self.registry.pool_dead(pool, self.clocks.mono())

    def worker_gone(self, rec: RoomView, orphaned: frozenset[str] | None = None) -> bool:
        """The worker running the room's agent is dead while its pool may live on: the one its
        reports named, or the one whose beats listed the job before any report came."""
        mono = self.clocks.mono()
        if rec.worker is not None and rec.pool is not None:
            return self.registry.worker_gone(rec.pool, rec.worker, mono)
        if orphaned is None:
            orphaned = self.registry.orphaned_jobs(mono)
        return rec.dispatch_id is not None and rec.dispatch_id in orphaned

    def _pool_region(self, pool: str) -> str | None:
        return self.registry.region(pool)

    async def read(self, room: str) -> Versioned | None:
        got = await self.store.get(room)
        if got is not None and self.tracks(room):
            self.index.apply(room, got)  # (a room tracked elsewhere: its tracker counts it)
        return got

    def seen(self, versioned: Versioned) -> Versioned:
        if self.ownership is None:
            self.index.apply(versioned.record.room, versioned)
        else:
            self.ownership.wrote(versioned)
        return versioned
