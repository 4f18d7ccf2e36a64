"""A worker whose connection is gone is dead at once, not after its missed beats (issue 16).

Each worker answers requests on ``switchboard.pools.<pool>.presence.<worker>``
(agent_worker/presence.py). NATS answers a request "no responders" only when no connection holds
that subscription, so for a killed worker the answer comes a beat after its silence began,
where the beats alone need ``dead_after_missed_beats`` of them (3 s by default).

Only **late** workers are asked (silent for :data:`LATE_AFTER_BEATS` intervals on the registry's
hearing clock), so a healthy deployment sends no probes at all. A worker is declared gone only
when all of these hold, each guarding against a false death:

- it answered a probe before (a build without presence, or a NATS user without the permission,
  would answer "no responders" forever: such workers are judged by their beats alone);
- NATS said "no responders" to :data:`STRIKES` probes in a row, :data:`PROBE_S` apart (a worker
  that reconnects to another server of the cluster is back within that);
- its last beat arrived after this replica's own connection last (re)connected: after a NATS
  restart, a worker not yet reconnected has no subscription either, but it is not dead;
- no beat arrived since the probes began (:meth:`PoolRegistry.mark_gone` checks).

A frozen worker (a GC pause, SIGSTOP, a CPU burst) keeps its subscription: its probes time out,
and it keeps its rooms unless its beats stay away for the whole ``dead_after_missed_beats``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

from orchestrator.pools import PoolRegistry
from shared import subjects

log = logging.getLogger(__name__)

PROBE_S = 0.1  # how often late workers are asked
ANSWER_S = 0.25  # how long an answer is awaited (a timeout means "alive, maybe frozen")
STRIKES = 2  # "no responders" in a row before a worker is gone
# Silence, in heartbeat intervals, before a worker is asked: a beat's usual jitter is milliseconds,
# and a late worker that is alive only costs an answered probe.
LATE_AFTER_BEATS = 1.1
RECHECK_S = 60.0  # a worker that never answered is asked again after this (it may be upgraded)
MAX_PROBES = 64  # per round: a deployment-wide silence does not become a probe storm


@dataclass(slots=True)
class _Known:
    first_heard: float
    answers: bool | None = None  # None: not asked yet (or no clear answer yet)
    asked_at: float = 0.0
    unclear: int = 0  # asks in a row without a clear answer (frozen, or the permission missing)
    strikes: int = 0
    struck_beat: float = 0.0  # the arrival of the last beat before the strikes: one silence's


class WorkerPresence:
    """Probe late workers and mark those whose connection is gone (see the module's doc)."""

    def __init__(
        self,
        nc: NATS,
        registry: PoolRegistry,
        heartbeat_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_gone: Callable[[], None] = lambda: None,
    ) -> None:
        self._nc = nc
        self._on_gone = on_gone  # a worker was just marked gone: its rooms can move now
        self._registry = registry
        self._interval = heartbeat_interval_s
        self._clock = clock
        self._known: dict[tuple[str, str], _Known] = {}
        self._connected_since = clock()
        self._pruned_at = clock()

    def heard(self, pool: str, worker: str) -> None:
        """A beat arrived (called per beat: one dict look-up)."""
        if (pool, worker) not in self._known:
            self._known[(pool, worker)] = _Known(first_heard=self._clock())

    def reconnected(self) -> None:
        """This replica's NATS connection came back: beats heard before say nothing of who has
        reconnected since."""
        self._connected_since = self._clock()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PROBE_S)
            try:
                await self.round()
            except Exception:  # a fault here must not take the replica's other loops down
                log.exception("presence round failed; the beats alone judge the workers meanwhile")

    async def round(self) -> None:
        """One round: ask the workers never asked, then the late ones."""
        now = self._clock()
        if now - self._pruned_at >= RECHECK_S:
            self._prune(now)
        asks: list[tuple[str, str]] = []
        for key, k in self._known.items():
            # A worker subscribes before it is first heard, but its first beat may race its
            # subscription: ask from one interval after the first beat.
            # No clear answer yet: asked again after 1, 2, 4 ... up to RECHECK_S seconds (a NATS user
            # without the permission must not make every round a round of timeouts).
            again = 0.0 if k.unclear == 0 else min(RECHECK_S, 2.0 ** (k.unclear - 1))
            never = k.answers is None and now - k.first_heard >= self._interval and now - k.asked_at >= again
            if never or (k.answers is False and now - k.asked_at >= RECHECK_S):
                asks.append(key)
        late: dict[tuple[str, str], float] = {}
        for pool, worker, seen_at in self._registry.late_workers(now, self._interval * LATE_AFTER_BEATS):
            known = self._known.get((pool, worker))
            if known is not None and known.answers and seen_at > self._connected_since:
                late[(pool, worker)] = seen_at
        keys = [*asks[:MAX_PROBES], *list(late)[:MAX_PROBES]]
        if not keys:
            return
        async with asyncio.TaskGroup() as tg:
            tasks = {key: tg.create_task(self._ask(*key)) for key in dict.fromkeys(keys)}
        for key, task in tasks.items():
            self._judge(key, task.result(), late.get(key), now)

    async def _ask(self, pool: str, worker: str) -> bool | None:
        """True: it answered; False: NATS said no one holds its subscription; None: no answer in
        time, or the probe failed (this replica's connection, a permission): says nothing."""
        subject = subjects.worker_presence(pool, worker)
        if subject is None:
            return None
        try:
            await self._nc.request(subject, b"", timeout=ANSWER_S)
        except NoRespondersError:
            return False
        except Exception:
            return None
        return True

    def _judge(
        self, key: tuple[str, str], answer: bool | None, late_seen_at: float | None, now: float
    ) -> None:
        k = self._known.get(key)
        if k is None:
            return
        if late_seen_at is None:  # a first (or repeated) ask: does it answer at all?
            k.asked_at = now
            if answer is None:
                k.unclear += 1
            else:
                k.answers, k.unclear = answer, 0
            return
        if answer is not False:
            k.strikes = 0
            return
        if k.struck_beat != late_seen_at:  # strikes count within one silence only
            k.strikes, k.struck_beat = 0, late_seen_at
        k.strikes += 1
        if k.strikes < STRIKES:
            return
        k.strikes = 0
        pool, worker = key
        if self._registry.mark_gone(pool, worker, late_seen_at, now):
            self._on_gone()
            log.warning(
                "worker %s of pool %s is gone: silent %.1f s and NATS holds no connection for it; "
                "its rooms fail over now",
                worker,
                pool,
                now - late_seen_at,
                extra={"pool": pool, "worker": worker},
            )

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        for key in [key for key in self._known if not self._registry.knows(*key)]:
            del self._known[key]
