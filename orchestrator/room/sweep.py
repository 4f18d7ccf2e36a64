"""The sweep: every room whose timer is due, each in its own isolated step.

Timers, expired claims, dead pools, rooms waiting for a pool and removals left pending are all
"due" by one function (:func:`orchestrator.room.decide.due`). One room's failure — a NATS timeout,
an unreadable record, a bug — is logged and never touches the others: each room runs in its own
task that catches its own errors, inside a bounded TaskGroup.

:meth:`Sweep.loop` wakes at the index's next wake-up time, and at least every
``sweep_interval_s`` (the deaths of pools and workers have no time of their own), and does not
wait for a pass's steps before the next: a deadline fires when it is due, not up to an interval
plus the previous pass's slowest step later (issue 15: p99 350-460 ms late before).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.consumer import is_transient
from orchestrator.pools import FORGET_AFTER_S
from orchestrator.records import HOLDING
from orchestrator.room.decide import due

if TYPE_CHECKING:
    from orchestrator.room.reconciler import Reconciler

log = logging.getLogger(__name__)


class Sweep:
    def __init__(self, reconciler: Reconciler) -> None:
        self.r = reconciler
        self._unheard_warned = False
        self._queued: set[str] = set()  # rooms whose step is waiting for a slot or running
        self._poked = asyncio.Event()  # a death is known now: look at deaths without waiting

    def poke(self) -> None:
        """Look at the deaths at once (a worker's connection was just seen gone), not at the
        next interval."""
        self._poked.set()

    async def loop(
        self,
        ready: Callable[[], bool],
        concurrency: int = 32,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Sweep until cancelled (see the module's doc); ``ready``: whether the index has synced."""
        interval = self.r.cfg.sweep_interval_s
        limit = asyncio.Semaphore(concurrency)
        deaths_at = self.r.clocks.mono()  # the next look at deaths: every interval
        async with asyncio.TaskGroup() as steps:
            while True:
                wait = deaths_at - self.r.clocks.mono()
                wake = self.r.index.next_wake()
                if wake is not None:
                    wait = min(wait, wake - self.r.clocks.wall())
                await self._pause(max(0.0, wait))
                if self._poked.is_set():
                    self._poked.clear()
                    deaths_at = self.r.clocks.mono()
                if not ready():
                    # The index is still loading (its past wake-ups would make this loop spin).
                    await self._pause(interval)
                    continue
                deaths = self.r.clocks.mono() >= deaths_at
                if deaths:
                    deaths_at = self.r.clocks.mono() + interval
                try:
                    self.start(steps, limit, deaths)
                except Exception as exc:
                    if on_error is not None:
                        on_error(exc)
                    else:
                        log.exception("sweep failed; next one in %.2fs", interval)

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or until :meth:`poke`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._poked.wait()

    async def run(self, concurrency: int) -> None:
        """One pass, its steps awaited."""
        async with asyncio.TaskGroup() as steps:
            self.start(steps, asyncio.Semaphore(concurrency), deaths=True)

    def start(self, steps: asyncio.TaskGroup, limit: asyncio.Semaphore, deaths: bool) -> None:
        """Start a step for every due room whose step is not already waiting or running;
        ``deaths``: look at the rooms of dead pools and workers too (each interval), not only at
        the rooms whose time has come."""
        if deaths:
            mono = self.r.clocks.mono()
            self._say_if_unheard(mono)
            self._forget_silent_workers(mono)
        for room in self.due_rooms(deaths):
            if room not in self._queued:
                self._queued.add(room)
                steps.create_task(self._one(room, limit))

    async def _one(self, room: str, limit: asyncio.Semaphore) -> None:
        try:
            async with limit:
                if self.r.locks.busy(room):
                    return  # an event for it is being handled: that handler sees the same facts
                await self.r.reconcile(room)
        except Exception as err:
            log.warning("sweep step for %s deferred: %r", room, err, exc_info=not is_transient(err))
        finally:
            self._queued.discard(room)

    def due_rooms(self, deaths: bool = True) -> list[str]:
        """The rooms to step now. Not a walk over every live room: those the index's wake-up heap
        says are due by the clock, and with ``deaths`` those holding on a pool that is dead (or
        forgotten), on a worker that is, or on a job only a dead worker listed; then :func:`due`
        decides each."""
        r = self.r
        now = r.clocks.wall()
        mono = r.clocks.mono()
        interval = r.cfg.sweep_interval_s
        # Still due next time round (a step in flight...): looked at again on the next interval's
        # boundary, one wake-up for all of them rather than one each.
        candidates = set(r.index.due_by_time(now, (math.floor(now / interval) + 1) * interval))
        dead: dict[str, bool] = {}
        orphaned: frozenset[str] | None = None
        if deaths:
            dead = {pool: True for pool in r.index.pools_holding() if r.registry.pool_dead(pool, mono)}
            for pool in dead:
                candidates |= r.index.holding_on(pool)
            for pool, worker in r.index.workers_holding():
                if r.registry.worker_gone(pool, worker, mono):
                    candidates |= r.index.holding_with(pool, worker)
            orphaned = r.registry.orphaned_jobs(mono)
            for job in orphaned:
                room = r.index.holding_job(job)
                if room is not None:
                    candidates.add(room)
        rooms: list[str] = []
        for room in sorted(candidates):
            rec = r.index.get(room)
            if rec is None:
                continue
            gone = worker_gone = False
            if rec.state in HOLDING and rec.pool is not None:
                if rec.pool not in dead:
                    dead[rec.pool] = r.registry.pool_dead(rec.pool, mono)
                gone = dead[rec.pool]
                if not gone and orphaned is None and rec.worker is None:
                    orphaned = r.registry.orphaned_jobs(mono)
                worker_gone = not gone and r.worker_gone(rec, orphaned)
            cause = due(
                rec,
                now,
                replica=r.replica,
                pool_gone=gone,
                worker_gone=worker_gone,
                assign_check_s=r.cfg.assign_check_s,
            )
            if cause is not None and not r.locks.busy(rec.room):
                rooms.append(rec.room)
        return rooms

    def _say_if_unheard(self, mono: float) -> None:
        """Once per episode: a replica hearing no pool at all does not fail rooms over (PoolRegistry)."""
        registry = self.r.registry
        unheard = registry.unheard_s(mono)
        if unheard is not None and unheard >= registry.dead_after_s:
            if not self._unheard_warned:
                self._unheard_warned = True
                log.warning(
                    "no heartbeat from any pool for %.1fs: this replica cannot tell every pool dying "
                    "from its own deafness (NATS, a starved loop), so no pool is declared dead until "
                    "beats are heard again",
                    unheard,
                )
        elif self._unheard_warned and unheard is not None:
            self._unheard_warned = False
            log.info("heartbeats heard again: pool liveness is judged again")

    def _forget_silent_workers(self, mono: float) -> None:
        """Prune the pool registry: worker ids change with every deploy. Only workers silent for
        FORGET_AFTER_S of hearing go — long dead by then, their rooms moved — and a forgotten pool
        counts as gone, so no liveness judgement changes."""
        forgotten = self.r.registry.prune(mono, FORGET_AFTER_S)
        if forgotten:
            log.info(
                "forgot %d worker(s) silent for %.0fs or more: %s",
                len(forgotten),
                FORGET_AFTER_S,
                ", ".join(forgotten),
            )
