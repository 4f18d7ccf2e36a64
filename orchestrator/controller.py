"""The room controller: observe the record, compare with what should be, act, idempotently.

Inputs are room events, agent status reports and a periodic sweep of timers and pool health.
Each step re-reads the record, decides, and writes the next state with compare-and-set before or
after its one side effect, so a crash at any line leaves a state another replica resumes:

- ``received`` / ``redispatching`` / ``waiting_for_pool`` → choose a pool → ``dispatching``
  (the CAS that records the choice is the claim: one replica wins it and holds a lease);
- ``dispatching`` → CreateDispatch (retried, ambiguous failures checked against list_dispatch)
  → ``dispatched`` with a join deadline;
- joined / voice reports → ``joined`` / ``speaking``; deadlines, dead pools, ``left`` and ``error``
  → ``redispatching`` with the pool excluded and the old dispatch and agent removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from orchestrator.alongside import alongside
from orchestrator.dispatcher import create_dispatch
from orchestrator.home_region import home_region, region_hint
from orchestrator.index import RoomIndex
from orchestrator.livekit_gateway import LiveKitCallError, LiveKitGateway
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.override import OVERRIDE_KEY, DispatchOverride, read_override
from orchestrator.pools import FORGET_AFTER_S, PoolRegistry
from orchestrator.records import HOLDING, IN_FLIGHT, RoomRecord, RoomState
from orchestrator.rules import match_rule
from orchestrator.scheduler import Decision, PoolView, ScheduleRequest, Topology, decision_seed, schedule
from orchestrator.store import Conflict, RoomStore, Versioned
from orchestrator.transitions import note, transition
from shared.config import SwitchboardConfig
from shared.dispatch_metadata import attempt_key, build_dispatch_metadata
from shared.logs import log_context
from shared.messages import AgentStatus, DispatchInfo, RoomCreated, RoomEnded
from shared.subjects import pool_agent_name
from shared.tracecontext import extract_from, inject_into

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("switchboard.orchestrator")
S = RoomState

MAX_REJECTION_EVENTS = 20
# How many CAS conflicts one step tolerates before leaving the room to the next sweep.
_MAX_CONFLICTS = 5


@dataclass(slots=True)
class _Lease:
    """The record as last written by this replica while it holds the step (renewals bump it)."""

    current: Versioned


@dataclass(frozen=True, slots=True)
class Clocks:
    """Wall clock for deadlines shared through KV; monotonic clock for heartbeat ages."""

    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic


def _gone(view: PoolView | None) -> bool:
    """A pool the registry does not know (any more) or hears nothing from: its rooms fail over."""
    return view is None or view.liveness == "dead"


class Controller:
    def __init__(
        self,
        *,
        store: RoomStore,
        gateway: LiveKitGateway,
        config: SwitchboardConfig,
        registry: PoolRegistry,
        index: RoomIndex,
        replica: str,
        clocks: Clocks | None = None,
        metrics: OrchestratorMetrics | None = None,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.config = config
        self.cfg = config.orchestrator
        self.registry = registry
        self.index = index
        self.replica = replica
        self.clocks = clocks or Clocks()
        self.metrics = metrics
        self.topology = Topology.from_config(config)
        self._locks: dict[str, asyncio.Lock] = {}
        self._seed = config.orchestrator.seed
        self._decisions = 0
        self._unheard_warned = False
        # Lease on an in-flight step: longer than one full CreateDispatch retry budget.
        self.lease_s = self.cfg.dispatch_deadline_s + 5.0

    # ------------------------------------------------------------------------------------------
    # inputs
    # ------------------------------------------------------------------------------------------

    async def on_room_created(self, event: RoomCreated) -> None:
        now = self.clocks.wall()
        override = read_override(event.metadata)
        user_meta = {k: v for k, v in event.metadata.items() if k != OVERRIDE_KEY} if event.metadata else None
        metadata = json.dumps(user_meta, separators=(",", ":")) if user_meta is not None else None
        record = RoomRecord(
            room=event.room,
            sid=event.sid,
            home_region=home_region(event.region, event.metadata, self.topology),
            user_metadata=metadata,
            received_at=now,
            event_at=event.created_at.timestamp() if event.created_at else None,
            override_agent=override.agent if override else None,
            override_pool=override.pool if override else None,
            manual=bool(override and override.manual),
            owner=self.replica,
            lease_until=now + self.lease_s,
            **_trace_fields(),
        )
        what = f"manual dispatch by {override.requested_by or 'an operator'}" if override else "room event"
        record = note(
            record,
            now=now,
            event="received",
            detail=f"{what} (sid {event.sid or '-'})",
            data={"region_hint": region_hint(event.region, event.metadata)},
        )
        async with self._lock(event.room):
            created = await self.store.create(record)
            if created is None:
                existing = await self.store.get(event.room)
                if existing is None or not self._is_new_incarnation(existing.record, event, override):
                    log.info("duplicate room event ignored", extra={"room": event.room})
                    return
                # Same name, new LiveKit room (new sid) after the old one ended: start over.
                created = await self.store.update(record, existing.revision)
            self._seen(created)
            await self._drive(created)

    async def on_room_ended(self, event: RoomEnded) -> None:
        async with self._lock(event.room):
            for _ in range(_MAX_CONFLICTS):
                current = await self.store.get(event.room)
                if current is None or current.record.terminal:
                    return
                if event.sid and current.record.sid and event.sid != current.record.sid:
                    return  # the end of an older incarnation of this room name
                rec = current.record
                # Clean up first (idempotent): once the record says ended, nothing else will.
                await self._remove_agent(rec, reason="room ended")
                ended = transition(
                    rec,
                    S.ENDED,
                    now=self.clocks.wall(),
                    event="ended",
                    detail="room ended",
                    deadline=None,
                    owner=None,
                    lease_until=None,
                )
                try:
                    await self._commit(rec, ended, current.revision)
                except Conflict:
                    continue
                return

    async def on_status(self, status: AgentStatus) -> None:
        async with self._lock(status.room):
            for _ in range(_MAX_CONFLICTS):
                current = await self.store.get(status.room)
                if current is None:
                    log.warning("status for unknown room", extra={"room": status.room, "state": status.state})
                    return
                try:
                    await self._apply_status(current, status)
                    return
                except Conflict:
                    continue

    async def sweep(self, concurrency: int = 32) -> None:
        """Timers, expired leases, dead pools, rooms waiting for a pool: one pass over the index.
        Workers long silent are forgotten first (see :meth:`_forget_silent_workers`).

        Work runs concurrently (bounded), so one slow LiveKit call does not hold up every room.
        """
        now = self.clocks.wall()
        mono = self.clocks.mono()
        self._say_if_unheard(mono)
        self._forget_silent_workers(mono)
        pools = {p.pool: p for p in self.registry.snapshot(mono)}
        work: list[tuple[str, str | None]] = []
        for versioned in self.index.live():
            rec = versioned.record
            if rec.state in IN_FLIGHT or rec.state == S.WAITING_FOR_POOL:
                leased = rec.owner not in (None, self.replica) and (rec.lease_until or 0) > now
                if not leased and not self._lock(rec.room).locked():
                    work.append((rec.room, None))
                continue
            cause: str | None = None
            if rec.state in HOLDING and rec.pool is not None and _gone(pools.get(rec.pool)):
                cause = "pool_dead"
            if cause is None and rec.deadline is not None and rec.deadline <= now:
                cause = {S.DISPATCHED: "join_timeout", S.JOINED: "no_voice"}.get(rec.state)
            if (
                cause is None
                and rec.state == S.DISPATCHED
                and rec.assign_checked_at is None
                and (rec.dispatched_at or now) + self.cfg.assign_check_s <= now
            ):
                cause = "check_assignment"
            if cause is not None:
                work.append((rec.room, cause))
        if not work:
            return
        limit = asyncio.Semaphore(concurrency)

        async def one(room: str, cause: str | None) -> None:
            async with limit:
                try:
                    if cause is None:
                        await self._guarded_drive(room)
                    elif cause == "check_assignment":
                        await self._check_assignment(room)
                    else:
                        await self._guarded_redispatch(room, cause)
                except (Conflict, LiveKitCallError) as err:
                    log.info("sweep step for %s deferred: %s", room, err)

        async with asyncio.TaskGroup() as tg:
            for room, cause in work:
                tg.create_task(one(room, cause))

    # ------------------------------------------------------------------------------------------
    # status reports
    # ------------------------------------------------------------------------------------------

    async def _apply_status(self, current: Versioned, status: AgentStatus) -> None:
        rec = current.record
        now = self.clocks.wall()
        with log_context(
            room=rec.room, pool=status.pool, attempt=status.attempt, dispatch_id=status.dispatch_id
        ):
            if (
                rec.state == S.DISPATCHING
                and rec.dispatch_id is None
                and status.attempt == rec.attempt
                and status.pool == rec.pool
                and status.state in ("joined", "voice")
            ):
                # Our CreateDispatch landed but its answer was lost or is still on its way (slow or
                # reset LiveKit): the agent of this very attempt reports first. Adopt its dispatch
                # instead of evicting it as a stale one; the dispatching step finds it too.
                rec = transition(
                    rec,
                    S.DISPATCHED,
                    now=now,
                    event="dispatched",
                    detail="dispatch confirmed by its agent's report (CreateDispatch answer not seen)",
                    data={"dispatch_id": status.dispatch_id, "pool": rec.pool},
                    dispatch_id=status.dispatch_id,
                    dispatched_at=now,
                    deadline=now + self.cfg.join_deadline_s,
                    owner=None,
                    lease_until=None,
                )
            if status.dispatch_id != rec.dispatch_id or rec.terminal:
                await self._stale_status(rec, status)
                return
            data: dict[str, Any] = {"worker": status.worker}
            if status.warnings:
                data["warnings"] = status.warnings
            if status.state == "joined" and rec.state == S.DISPATCHED:
                new = transition(
                    rec,
                    S.JOINED,
                    now=now,
                    event="joined",
                    detail=f"agent joined on {status.worker}",
                    data=data,
                    identity=status.identity,
                    joined_at=now,
                    deadline=now + self.cfg.voice_deadline_s,
                )
            elif status.state == "voice" and rec.state in (S.DISPATCHED, S.JOINED):
                new = transition(
                    rec,
                    S.SPEAKING,
                    now=now,
                    event="voice",
                    detail="agent audio heard by a listener",
                    data=data,
                    identity=status.identity or rec.identity,
                    voice_at=now,
                    joined_at=rec.joined_at or now,
                    deadline=None,
                )
            elif status.state == "left" and rec.state in HOLDING:
                if not await self._room_exists(rec.room):
                    new = transition(
                        rec,
                        S.ENDED,
                        now=now,
                        event="ended",
                        detail=f"agent left ({status.reason or 'no reason'}) and the room is gone",
                        deadline=None,
                    )
                else:
                    new = self._to_redispatching(rec, now, "left", status.reason, exclude=False)
            elif status.state == "error" and rec.state in HOLDING:
                new = self._to_redispatching(rec, now, "agent_error", status.reason, exclude=True)
            else:
                # Repeated or out-of-order report (e.g. joined after voice): keep it in the timeline only.
                log.debug("status %s ignored in state %s", status.state, rec.state.value)
                return
            await self._commit(current.record, new, current.revision)
            if new.state == S.REDISPATCHING:
                await self._drive(self.index.get(rec.room) or await self._must_get(rec.room))

    async def _stale_status(self, rec: RoomRecord, status: AgentStatus) -> None:
        """A report from a dispatch we replaced: make sure that late agent does not double up."""
        if status.state in ("joined", "voice") and status.identity:
            log.warning(
                "late agent from a replaced dispatch: removing it",
                extra={"room": rec.room, "dispatch_id": status.dispatch_id},
            )
            try:
                await self.gateway.delete_dispatch(status.dispatch_id, rec.room)
                await self.gateway.remove_participant(rec.room, status.identity)
            except LiveKitCallError as err:
                log.warning("could not remove late agent: %s", err)

    # ------------------------------------------------------------------------------------------
    # driving a room forward
    # ------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _unless_busy(self, room: str) -> AsyncIterator[Versioned | None]:
        """The room's fresh record under its lock, for a sweep step; None when another task of
        this replica is already on the room (it will see the same facts) or the record is gone."""
        lock = self._lock(room)
        if lock.locked():
            yield None
            return
        async with lock:
            current = await self.store.get(room)
            yield self._seen(current) if current is not None else None

    async def _guarded_drive(self, room: str) -> None:
        async with self._unless_busy(room) as current:
            if current is not None:
                await self._drive(current)

    async def _check_assignment(self, room: str) -> None:
        """LiveKit answers CreateDispatch with 200 even when it cannot give the job to any worker
        (all full in its view, assignment timed out) and never retries. A dispatch still without a
        job after ``assign_check_s`` is dead: dispatch again now, not at the join deadline."""
        async with self._unless_busy(room) as current:
            if current is None:
                return
            rec = current.record
            if rec.state != S.DISPATCHED or rec.assign_checked_at is not None or not rec.dispatch_id:
                return
            jobs = await self.gateway.dispatch_jobs(rec.room, rec.dispatch_id)
            now = self.clocks.wall()
            if jobs is None or jobs > 0:
                new = note(
                    rec.model_copy(update={"assign_checked_at": now}),
                    now=now,
                    event="assigned",
                    detail=f"LiveKit gave the dispatch {jobs} job(s)" if jobs else "dispatch not listed",
                )
                await self._commit(rec, new, current.revision)
                return
            with self._span("redispatch", rec) as span:
                span.set_attribute("switchboard.redispatch.cause", "not_assigned")
                moved = await self._commit(
                    rec,
                    self._to_redispatching(
                        rec,
                        now,
                        "not_assigned",
                        f"LiveKit gave the dispatch no job within {self.cfg.assign_check_s:g}s",
                        exclude=False,
                    ),
                    current.revision,
                )
                await self._drive(moved)

    def _say_if_unheard(self, mono: float) -> None:
        """Once per episode: a replica hearing no pool at all does not fail rooms over (PoolRegistry)."""
        unheard = self.registry.unheard_s(mono)
        if unheard is not None and unheard >= self.registry.dead_after_s:
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
        """Prune the pool registry: worker ids change with every deploy, and without this every
        worker ever heard would stay in memory. Only workers silent for :data:`FORGET_AFTER_S` of
        hearing go — long dead by then, their rooms moved — and a forgotten pool counts as gone
        (:func:`_gone`), so no liveness judgement changes."""
        forgotten = self.registry.prune(mono, FORGET_AFTER_S)
        if forgotten:
            log.info(
                "forgot %d worker(s) silent for %.0fs or more: %s",
                len(forgotten),
                FORGET_AFTER_S,
                ", ".join(forgotten),
            )

    def _pool_dead(self, pool: str | None) -> bool:
        return _gone(self.registry.view(pool, self.clocks.mono()) if pool else None)

    async def _guarded_redispatch(self, room: str, cause: str) -> None:
        async with self._unless_busy(room) as current:
            if current is None:
                return
            rec = current.record
            now = self.clocks.wall()
            still = (
                # Still dead now: beats queued behind the sweep may have arrived since.
                (cause == "pool_dead" and rec.state in HOLDING and self._pool_dead(rec.pool))
                or (
                    cause == "join_timeout" and rec.state == S.DISPATCHED and (rec.deadline or now + 1) <= now
                )
                or (cause == "no_voice" and rec.state == S.JOINED and (rec.deadline or now + 1) <= now)
            )
            if not still:
                return
            with self._span("redispatch", rec) as span:
                span.set_attribute("switchboard.redispatch.cause", cause)
                try:
                    # A dead pool is not excluded: liveness already keeps rooms off it, and one
                    # that beats again is fit (excluding it failed rooms after a false death).
                    new = self._to_redispatching(rec, now, cause, None, exclude=cause != "pool_dead")
                    moved = await self._commit(rec, new, current.revision)
                except Conflict:
                    return
                await self._drive(moved)

    async def _drive(self, current: Versioned) -> None:
        """Run in-flight steps until the room rests (dispatched, waiting, terminal) or we lose it."""
        conflicts = 0
        while conflicts < _MAX_CONFLICTS:
            rec = current.record
            now = self.clocks.wall()
            if (
                rec.owner not in (None, self.replica)
                and (rec.lease_until or 0) > now
                and rec.state in IN_FLIGHT
            ):
                return  # another replica holds this step
            with log_context(room=rec.room, pool=rec.pool, attempt=rec.attempt):
                try:
                    if rec.state in (S.RECEIVED, S.REDISPATCHING, S.WAITING_FOR_POOL):
                        nxt = await self._place(current)
                    elif rec.state == S.DISPATCHING:
                        nxt = await self._dispatch(current)
                    else:
                        return
                except Conflict:
                    conflicts += 1
                    fresh = await self.store.get(rec.room)
                    if fresh is None:
                        return
                    current = fresh
                    self._seen(current)
                    continue
            if nxt is None:
                return
            current = nxt

    async def _place(self, current: Versioned) -> Versioned | None:
        """Choose a pool (or none) for a room that needs one, and record the choice (the claim)."""
        rec = current.record
        now = self.clocks.wall()
        with self._span("schedule", rec) as span:
            if rec.state == S.REDISPATCHING:
                await self._remove_agent(rec, reason=rec.reason or "redispatch")
            # home_region is resolved on receipt; resolving it again at the rule step is a no-op
            # for those records and keeps records from older builds (the raw hint) right.
            if rec.rule is None and rec.override_agent:
                rec = note(
                    rec.model_copy(
                        update={
                            "rule": "manual",
                            "agent": rec.override_agent,
                            "home_region": self.topology.home_for(rec.home_region),
                        }
                    ),
                    now=now,
                    event="rule",
                    detail=f"manual dispatch: agent {rec.override_agent!r} (no rule needed)",
                )
            if rec.rule is None:
                match = match_rule(rec.room, self.config.rules)
                if match.rule is None:
                    span.set_attribute("switchboard.rule", "")
                    return await self._finish(
                        current, rec, S.IGNORED, now=now, event="rule", detail=match.reason, reason="no_rule"
                    )
                rec = note(
                    rec.model_copy(
                        update={
                            "rule": match.rule.name,
                            "agent": match.rule.agent,
                            "home_region": self.topology.home_for(rec.home_region),
                        }
                    ),
                    now=now,
                    event="rule",
                    detail=match.reason,
                )
            assert rec.agent is not None and rec.home_region is not None
            if rec.attempt >= self.cfg.max_attempts:
                return await self._finish(
                    current,
                    rec,
                    S.FAILED,
                    now=now,
                    event="failed",
                    detail=f"gave up after {rec.attempt} attempts (last: {rec.reason})",
                    reason="max_attempts",
                )
            pools = self.registry.snapshot(self.clocks.mono())
            reserved = self.index.reserved({p.pool: p.jobs for p in pools})
            if rec.override_pool and rec.attempt == 0:
                # A pinned manual dispatch decides the first placement; failover is normal.
                pools = [p for p in pools if p.pool == rec.override_pool]
            request = ScheduleRequest(room=rec.room, agent=rec.agent, region=rec.home_region)
            seed = self._next_seed(rec)

            def place(excluded: list[str]) -> Decision:
                return schedule(
                    replace(request, excluded=frozenset(excluded)),
                    pools,
                    reserved,
                    self.topology,
                    seed=seed,
                    strategy=self.cfg.strategy,
                )

            decision = place(rec.excluded)
            detail = decision.reason
            if decision.pool is None and rec.excluded and (again := place([])).pool is not None:
                # Every pool that could take the room has failed it once. Under a burst that means
                # slow (its agents queue to connect), not broken: try the best of them again rather
                # than fail with attempts left (max_attempts bounds it). Seen in the 200-room drills.
                decision = again
                detail = (
                    f"every fit pool had failed this room once ({', '.join(rec.excluded)}); "
                    f"attempt {rec.attempt + 1} of {self.cfg.max_attempts} tries again: {again.reason}"
                )
            summary = decision.to_dict()
            span.set_attribute("switchboard.decision.pool", decision.pool or "")
            span.set_attribute("switchboard.decision.candidates", len(decision.candidates))
            span.set_attribute("switchboard.decision.reason", decision.reason)
            span.set_attribute("switchboard.decision.rejected", len(decision.rejections))
            # One event per rejected pool, capped: the full list is in the room's history.
            for pool, why in list(decision.rejections.items())[:MAX_REJECTION_EVENTS]:
                span.add_event("rejected", {"switchboard.pool": pool, "switchboard.reason": why})
            if decision.pool is None:
                if rec.state == S.WAITING_FOR_POOL:
                    if rec.deadline is not None and rec.deadline <= now:
                        return await self._finish(
                            current,
                            rec,
                            S.FAILED,
                            now=now,
                            event="failed",
                            detail=decision.reason,
                            reason="no_pool",
                        )
                    return None  # still waiting; the sweep tries again
                new = transition(
                    rec,
                    S.WAITING_FOR_POOL,
                    now=now,
                    event="decision",
                    detail=decision.reason,
                    data=summary,
                    deadline=now + self.cfg.no_pool_deadline_s,
                    owner=None,
                    lease_until=None,
                )
                return await self._commit(current.record, new, current.revision)
            attempt = rec.attempt + 1
            new = transition(
                rec,
                S.DISPATCHING,
                now=now,
                event="decision",
                detail=detail,
                data=summary,
                attempt=attempt,
                pool=decision.pool,
                agent_name=pool_agent_name(rec.agent, decision.pool),
                dispatch_id=None,
                identity=None,
                dispatch_key=attempt_key(rec.room, attempt),
                owner=self.replica,
                lease_until=now + self.lease_s,
                deadline=None,
            )
            # Hold the slot before the first await, so concurrent decisions in this replica see it.
            self.index.hold(rec.room, decision.pool)
            try:
                return await self._commit(current.record, new, current.revision)
            except BaseException:
                self.index.release(rec.room)
                raise

    async def _dispatch(self, current: Versioned) -> Versioned | None:
        rec = current.record
        now = self.clocks.wall()
        # A step this replica did not start in this very call (taken over, or retried after the
        # whole retry budget failed) may already have landed in LiveKit: look before dispatching.
        look_first = rec.owner != self.replica
        if look_first:
            current = self._seen(
                await self.store.update(
                    note(
                        rec.model_copy(update={"owner": self.replica, "lease_until": now + self.lease_s}),
                        now=now,
                        event="resume",
                        detail=f"resuming dispatch (previous owner: {rec.owner or 'none'})",
                    ),
                    current.revision,
                )
            )
            rec = current.record
        assert rec.pool and rec.agent_name and rec.agent and rec.dispatch_key and rec.home_region
        region = self._pool_region(rec.pool) or rec.home_region
        with self._span("dispatch", rec):
            info = DispatchInfo(
                room=rec.room,
                attempt=rec.attempt,
                pool=rec.pool,
                region=region,
                agent=rec.agent,
                key=rec.dispatch_key,
            )
            user_metadata = rec.user_metadata
            lease = _Lease(current)
            try:
                # The look-first runs inside the retry budget: a LiveKit blip during it is retried
                # like any other call, not counted as a whole failed round. The lease is renewed
                # for as long as this replica works on the call, and only that long.
                async with alongside(self._renew_lease(lease), "lease_renewal"):
                    result = await create_dispatch(
                        self.gateway,
                        room=rec.room,
                        agent_name=rec.agent_name,
                        metadata=lambda: build_dispatch_metadata(user_metadata, info),
                        key=rec.dispatch_key,
                        deadline_s=self.cfg.dispatch_deadline_s,
                        attributes=_span_attrs(rec),
                        metrics=self.metrics,
                        maybe_landed=look_first,
                    )
                dispatch_id, tries, found = result.dispatch_id, result.tries, result.found_existing
            except LiveKitCallError as err:
                current, rec = lease.current, lease.current.record
                now = self.clocks.wall()
                if err.permanent:
                    log.error("dispatch failed permanently: %s", err, extra={"reason": err.reason})
                    return await self._finish(
                        current,
                        rec,
                        S.FAILED,
                        now=now,
                        event="dispatch_error",
                        detail=str(err),
                        reason=err.reason,
                    )
                rounds = 1 + sum(
                    1
                    for h in rec.history
                    if h.event == "dispatch_error" and h.data.get("key") == rec.dispatch_key
                )
                if rounds >= self.cfg.max_dispatch_rounds:
                    log.error(
                        "dispatch failed after %d rounds: %s", rounds, err, extra={"reason": err.reason}
                    )
                    return await self._finish(
                        current,
                        rec,
                        S.FAILED,
                        now=now,
                        event="dispatch_error",
                        detail=f"{err} (gave up after {rounds} rounds of retries)",
                        reason=err.reason,
                    )
                # LiveKit unreachable for the whole budget: release the claim; the sweep (any
                # replica) tries again, looking for a dispatch that may have landed first.
                new = note(
                    rec.model_copy(update={"owner": None, "lease_until": None}),
                    now=now,
                    event="dispatch_error",
                    detail=str(err),
                    data={"reason": err.reason, "key": rec.dispatch_key, "round": rounds},
                )
                await self._commit(current.record, new, current.revision)
                return None
        current, rec = lease.current, lease.current.record
        now = self.clocks.wall()
        took = f"after {tries} tr{'y' if tries == 1 else 'ies'}"
        # Found, not created: an earlier ambiguous try (or the replica this step was taken over
        # from) did land. `explain` says so, since no CreateDispatch of this round succeeded.
        detail = (
            f"found dispatch {rec.agent_name} of this attempt already in LiveKit {took}"
            if found
            else f"CreateDispatch {rec.agent_name} ok {took}"
        )
        data: dict[str, Any] = {"dispatch_id": dispatch_id, "pool": rec.pool}
        if found:
            data["found_existing"] = True
        new = transition(
            rec,
            S.DISPATCHED,
            now=now,
            event="dispatched",
            detail=detail,
            data=data,
            dispatch_id=dispatch_id,
            dispatched_at=now,
            deadline=now + self.cfg.join_deadline_s,
            owner=None,
            lease_until=None,
        )
        return await self._commit(current.record, new, current.revision)

    # ------------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------------

    async def _renew_lease(self, lease: _Lease) -> None:
        """Renew ``lease`` every third of its length (run alongside a slow step: a live owner keeps
        its room however slow LiveKit is; a dead one stops renewing and loses it within ``lease_s``)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            current = lease.current
            renewed = current.record.model_copy(update={"lease_until": self.clocks.wall() + self.lease_s})
            try:
                lease.current = self._seen(await self.store.update(renewed, current.revision))
            except Conflict:
                return  # someone else wrote the record: our final CAS will tell us what happened
            except Exception as err:  # NATS away: keep trying until the block ends
                log.warning("lease renewal for %s failed: %r", current.record.room, err)

    def _to_redispatching(
        self, rec: RoomRecord, now: float, cause: str, why: str | None, *, exclude: bool
    ) -> RoomRecord:
        excluded = (
            [*rec.excluded, rec.pool]
            if exclude and rec.pool and rec.pool not in rec.excluded
            else rec.excluded
        )
        detail = f"{cause}: {why}" if why else cause
        trace.get_current_span().add_event("redispatch", {"switchboard.redispatch.cause": cause})
        return transition(
            rec,
            S.REDISPATCHING,
            now=now,
            event="redispatch",
            detail=detail,
            data={"cause": cause, "pool": rec.pool},
            reason=cause,
            excluded=excluded,
            owner=self.replica,
            lease_until=now + self.lease_s,
            deadline=None,
        )

    async def _remove_agent(self, rec: RoomRecord, reason: str) -> None:
        """Delete our dispatch and evict its agent, so a late or stale agent never doubles up."""
        try:
            if rec.dispatch_id:
                await self.gateway.delete_dispatch(rec.dispatch_id, rec.room)
            if rec.identity:
                await self.gateway.remove_participant(rec.room, rec.identity)
        except LiveKitCallError as err:
            log.warning("cleanup of old dispatch failed (%s): %s", reason, err, extra={"room": rec.room})

    async def _room_exists(self, room: str) -> bool:
        try:
            return await self.gateway.room_exists(room)
        except LiveKitCallError:
            return True  # unknown: assume it is there and let the new dispatch decide

    async def _must_get(self, room: str) -> Versioned:
        got = await self.store.get(room)
        if got is None:
            raise Conflict(room)
        return got

    def _pool_region(self, pool: str) -> str | None:
        for view in self.registry.snapshot(self.clocks.mono()):
            if view.pool == pool:
                return view.region
        return None

    def _next_seed(self, rec: RoomRecord) -> int:
        # Deterministic per room and attempt when a seed is configured (tests), varied otherwise;
        # decision_seed hashes with BLAKE2b, so replicas agree (hash() is randomised per process).
        self._decisions += 1
        base = self._seed if self._seed is not None else time.monotonic_ns() + self._decisions
        return decision_seed(base, rec.room, rec.attempt)

    def _is_new_incarnation(
        self, rec: RoomRecord, event: RoomCreated, override: DispatchOverride | None
    ) -> bool:
        # Same name, new LiveKit room (new sid) after the old one ended; or an operator asking
        # again, by hand, for a room that failed or ended (the outage case).
        manual = override is not None and override.manual
        return rec.terminal and ((event.sid is not None and event.sid != rec.sid) or manual)

    def _seen(self, versioned: Versioned) -> Versioned:
        self.index.apply(versioned.record.room, versioned)
        return versioned

    async def _finish(
        self,
        current: Versioned,
        rec: RoomRecord,
        state: RoomState,
        *,
        now: float,
        event: str,
        detail: str,
        reason: str,
    ) -> Versioned:
        """Move to a terminal state: no owner, no lease, no timer left behind."""
        new = transition(
            rec,
            state,
            now=now,
            event=event,
            detail=detail,
            reason=reason,
            owner=None,
            lease_until=None,
            deadline=None,
        )
        return await self._commit(current.record, new, current.revision)

    async def _commit(self, old: RoomRecord, new: RoomRecord, revision: int) -> Versioned:
        """CAS-write ``new``; on a state change, log one line and record the room's metrics."""
        written = self._seen(await self.store.update(new, revision))
        if old.state != new.state:
            last = new.history[-1] if new.history else None
            with log_context(room=new.room, pool=new.pool, attempt=new.attempt, dispatch_id=new.dispatch_id):
                log.info(
                    "room %s: %s -> %s (%s)",
                    new.room,
                    old.state.value,
                    new.state.value,
                    last.detail if last else "",
                    extra={"state": new.state.value, "event": last.event if last else ""},
                )
            self._observe_transition(new)
        return written

    def _observe_transition(self, rec: RoomRecord) -> None:
        if self.metrics is None:
            return
        now = self.clocks.wall()
        since = now - rec.received_at
        attrs: dict[str, str | bool] = {
            "switchboard.pool": rec.pool or "",
            "switchboard.first_attempt": rec.attempt <= 1,
        }
        if rec.state == S.DISPATCHED:
            self.metrics.dispatches.add(1, {"outcome": "ok"})
            self.metrics.time_to_dispatch.record(since, attrs)
        elif rec.state == S.JOINED:
            self.metrics.time_to_joined.record(since, attrs)
        elif rec.state == S.SPEAKING:
            if rec.joined_at == rec.voice_at:
                self.metrics.time_to_joined.record(since, attrs)
            self.metrics.time_to_voice.record(since, attrs)
        elif rec.state == S.REDISPATCHING:
            self.metrics.redispatches.add(1, {"cause": rec.reason or "unknown"})
        elif rec.state == S.FAILED:
            self.metrics.dispatches.add(1, {"outcome": "failed", "reason": rec.reason or "unknown"})

    def _lock(self, room: str) -> asyncio.Lock:
        lock = self._locks.get(room)
        if lock is None:
            if len(self._locks) > 10_000:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[room] = asyncio.Lock()
        return lock

    @contextmanager
    def _span(self, name: str, rec: RoomRecord) -> Iterator[Span]:
        parent = None
        if trace.get_current_span().get_span_context().is_valid is False and rec.traceparent:
            parent = extract_from({"traceparent": rec.traceparent, "tracestate": rec.tracestate or ""})
        with _tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.INTERNAL, attributes=_span_attrs(rec)
        ) as span:
            yield span


def _span_attrs(rec: RoomRecord) -> dict[str, str | int]:
    attrs: dict[str, str | int] = {
        "switchboard.room": rec.room,
        "switchboard.attempt": rec.attempt,
        "switchboard.state": rec.state.value,
    }
    if rec.pool:
        attrs["switchboard.pool"] = rec.pool
    if rec.home_region:
        attrs["switchboard.region"] = rec.home_region
    if rec.dispatch_id:
        attrs["switchboard.dispatch_id"] = rec.dispatch_id
    return attrs


def _trace_fields() -> dict[str, str | None]:
    carrier: dict[str, Any] = inject_into({})
    return {"traceparent": carrier.get("traceparent"), "tracestate": carrier.get("tracestate") or None}
