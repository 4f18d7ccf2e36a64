"""One orchestrator replica as the service runs it (orchestrator/service.py), around the real
controller: its pool registry (fed by heartbeats) and message handlers from the start; after the
warm-up its membership (``tests.sim.members``: its view of the live replicas) deciding the
partitions its ``Ownership`` tracks, one KV watch per tracked partition feeding its room index
(the real ``orchestrator.partition_watch.PartitionWatches``), its reservations reports to the
other replicas, a sweep every ``sweep_interval_s`` and the resync over its own partitions
(``orchestrator.room.resync.Resync.run``, no lease) — the sweep and the resync only while the
index is synced. A crash cancels every task it has; a clean stop too, but its membership key is
deleted on the way out."""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from orchestrator.index import RoomIndex
from orchestrator.ownership import Ownership
from orchestrator.partition_watch import PartitionWatches
from orchestrator.pools import PoolRegistry
from orchestrator.service import RESERVATIONS_EVERY_S, RESERVATIONS_KEEPALIVE_S
from orchestrator.store import RoomStore
from shared.codec import decode, encode
from shared.messages import AgentStatus, ReservationsReport, RoomCreated, RoomEnded
from tests.sim.config import ORCHESTRATOR, WARMUP_S
from tests.sim.delivery import Envelope
from tests.sim.loop import ACTIVITY, ACTOR, SimTask
from tests.sim.subject import make_replica, make_resync

if TYPE_CHECKING:
    from tests.sim.world import World


class Replica:
    def __init__(self, world: World, slot: int, incarnation: int, phase: float) -> None:
        self.world = world
        self.slot = slot
        # A process's replica id is new on every start (hostname-pid-uuid): never its old leases.
        self.name = f"r{slot}" if incarnation == 1 else f"r{slot}.{incarnation}"
        self.alive = True
        self.ready = False  # consumers bound: the service takes messages only after its warm-up
        self.synced = False  # every tracked partition replayed (the service's readiness.index_synced)
        cfg = world.config.orchestrator
        self.index = RoomIndex(assign_check_s=cfg.assign_check_s)
        self.registry = PoolRegistry(
            ORCHESTRATOR.heartbeat_interval_s, ORCHESTRATOR.dead_after_missed_beats, world.config.pools
        )
        self.ownership = Ownership(self.name, self.index, cfg.member_ttl_s, world.loop.time)
        self.controller = make_replica(
            store=world.kv,
            gateway=world.livekit,
            config=world.config,
            registry=self.registry,
            index=self.index,
            replica=self.name,
            wall=world.wall,
            mono=world.loop.time,
            rng=random.Random(world.rng.getrandbits(64)),
            ownership=self.ownership,
        )
        self.watches = PartitionWatches(
            cast(RoomStore, world.kv), self.index, self.ownership, self._on_synced
        )
        self.resync = make_resync(self.controller, world.livekit, world.resync_bucket.pass_log(self.name))
        # Reservations reports: the next look at them (see touched), the last one sent and when.
        self._look: asyncio.TimerHandle | None = None
        self._sent: tuple[tuple[object, object], float] | None = None
        self._wire: ReservationsReport | None = None  # the last report sent, through the codec
        world.log(self.name, "replica up (warm-up, then membership, partition watches, sweep, resync)")
        world.loop.spawn(self._run(phase), actor=self.name, activity="sweep")

    async def _run(self, phase: float) -> None:
        # Learn the pools before taking rooms (the service's warm-up), then run its loops.
        await asyncio.sleep(WARMUP_S + phase)
        self.ready = True
        self.world.log(self.name, "consumers bound, joining the members")
        self.world.checks.impairment_changed()
        self.world.members.join(self)
        self._spawn(self.watches.run(), "watch")
        self.touched()  # reservations: looked at whenever something they count changes
        self._spawn(self.resync.run(lambda: self.synced), "resync")
        # The service's loop; a failed pass is counted where the service logs it, and goes on.
        await self.controller.sweep_loop(
            lambda: self.synced, on_error=lambda exc: self.world.checks.on_exception(self.name, "sweep", exc)
        )

    def _spawn(self, loop: Coroutine[Any, Any, None], activity: str) -> None:
        """One of the service's loops (its TaskGroup): one that ends, other than by the replica's
        end, is a bug (in production it takes the replica down)."""
        task = self.world.loop.spawn(loop, actor=self.name, activity=activity)

        def ended(task: asyncio.Task[None]) -> None:
            if task.cancelled() or self.world.stopped:
                return
            exc = task.exception()
            self.world.checks.loop_ended(self.name, activity, exc)

        task.add_done_callback(ended)

    # -- what the service's callbacks do -------------------------------------------------------------

    def context(self, activity: str) -> contextvars.Context:
        """A context running as this replica (for the callbacks the world runs on its behalf:
        their log lines and anything they start are this replica's)."""
        ctx = contextvars.copy_context()
        ctx.run(ACTOR.set, self.name)
        ctx.run(ACTIVITY.set, activity)
        return ctx

    def on_members(self, members: frozenset[str]) -> None:
        """Its view of the live replicas changed (``Membership``'s ``on_change``)."""
        self.context("membership").run(self._on_members, members)

    def _on_members(self, members: frozenset[str]) -> None:
        self.world.log(
            self.name,
            f"members: {', '.join(sorted(members)) or 'none'}"
            + ("" if self.ownership.me in members else " (not itself yet)"),
        )
        self.ownership.on_members(members)
        self.touched()

    def _on_synced(self, synced: bool) -> None:
        if synced != self.synced:
            self.world.log(
                self.name,
                f"room index {'synced' if synced else 'not synced'}: {len(self.ownership.owned)} partitions, "
                f"{len(self.index)} live rooms",
            )
        self.synced = synced

    # -- reservations (the service's _share_reservations) ------------------------------------------

    def touched(self) -> None:
        """Something its report reads may have changed: its index (a watch delivery, a KV answer
        it took in), its partitions, the pools' jobs."""
        if not self.ready:
            return
        at = self.world.loop.time() + RESERVATIONS_EVERY_S
        if self._look is None or self._look.when() > at:
            if self._look is not None:
                self._look.cancel()  # the keepalive's: this look comes first
            self._look = self.world.loop.call_at(
                at, self._share_reservations, context=self.context("reservations")
            )

    def _share_reservations(self) -> None:
        """The service's ``_share_reservations``: while it and another replica are members, tell
        the others its rooms in flight when they changed (at most every RESERVATIONS_EVERY_S) and
        every RESERVATIONS_KEEPALIVE_S regardless. The service looks every RESERVATIONS_EVERY_S;
        here a look follows a change (``touched``) or comes when the keepalive is due, which sends
        the same reports without waking twenty times a second for nothing."""
        self._look = None
        if not self.alive or self.world.stopped:
            return
        own = self.ownership
        if not own.joined or len(own.members) < 2:
            self._sent = None  # alone: nobody to tell
            return
        now = self.world.loop.time()
        in_flight = self.index.in_flight(
            self.registry.listed_jobs(now), lambda pool: self.registry.jobs_complete(pool, now)
        )
        report = own.report(in_flight)
        what = (report.reserved, report.applied)
        sent = self._sent
        if sent is None or what != sent[0]:
            self._wire = decode(ReservationsReport, encode(report))  # what the others receive
            due = True
        else:
            due = now >= sent[1] + RESERVATIONS_KEEPALIVE_S  # the same report again
        if due:
            assert self._wire is not None
            self.world.share_reservations(self, self._wire)
            sent = self._sent = (what, now)
        assert sent is not None
        # The keepalive: looked at again once it is due.
        self._look = self.world.loop.call_at(
            sent[1] + RESERVATIONS_KEEPALIVE_S,
            self._share_reservations,
            context=self.context("reservations"),
        )

    # -- messages ------------------------------------------------------------------------------------

    def handle(self, env: Envelope, label: str) -> SimTask[None]:
        return self.world.loop.spawn(self._handle(env), actor=self.name, activity=label)

    async def _handle(self, env: Envelope) -> None:
        c = self.controller
        msg = env.msg
        if isinstance(msg, RoomCreated):
            await c.on_room_created(msg)
        elif isinstance(msg, RoomEnded):
            # As the service: with JetStream's stamp of when the end was published.
            await c.on_room_ended(msg, env.published_at)
        elif isinstance(msg, AgentStatus):
            await c.on_status(msg)

    # -- the end ---------------------------------------------------------------------------------------

    def crash(self) -> None:
        """The process dies: its connection with it (its membership key stays until the TTL)."""
        self._down()
        self.world.members.crash(self)
        self.world.kv.unwatch(self.name)
        n = self.world.loop.cancel_actor(self.name)
        self.world.log(self.name, f"CRASH ({n} tasks cancelled at their await)")
        self.world.checks.impairment_changed()

    def stop(self) -> None:
        """A clean stop (SIGTERM): every loop cancelled; the membership deletes its key on the
        way out, so the others take its partitions at once."""
        self._down()
        self.world.members.stop(self)
        self.world.kv.unwatch(self.name)
        n = self.world.loop.cancel_actor(self.name)
        self.world.log(self.name, f"STOP ({n} tasks cancelled; its membership key is deleted)")
        self.world.checks.impairment_changed()

    def _down(self) -> None:
        if self._look is not None:
            self._look.cancel()
            self._look = None
        self.alive = False
        self.ready = False
        self.synced = False
