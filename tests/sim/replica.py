"""One orchestrator replica as the service runs it (orchestrator/service.py), around the real
controller: its own room index (fed by the KV watch) and pool registry (fed by heartbeats), a
sweep every ``sweep_interval_s``, the resync loop (``orchestrator.room.resync.Resync.run`` with a
lease in the simulated ``switchboard_resync`` bucket), and message handlers. A crash cancels every
task it has."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from orchestrator.index import RoomIndex
from orchestrator.pools import PoolRegistry
from shared.messages import AgentStatus, RoomCreated, RoomEnded
from tests.sim.config import ORCHESTRATOR, WARMUP_S
from tests.sim.delivery import Envelope
from tests.sim.loop import SimTask
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
        self.index = RoomIndex(assign_check_s=world.config.orchestrator.assign_check_s)
        self.registry = PoolRegistry(
            ORCHESTRATOR.heartbeat_interval_s, ORCHESTRATOR.dead_after_missed_beats, world.config.pools
        )
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
        )
        world.kv.watch(self.name, self.index)
        world.log(self.name, "replica up (index from a KV snapshot, then the watch)")
        world.loop.spawn(self._run(phase), actor=self.name, activity="sweep")
        # The resync: every replica runs the loop; the lease holder's passes list LiveKit's rooms.
        resync = make_resync(self.controller, world.livekit, world.resync_bucket.lease(self.name))
        world.loop.spawn(resync.run(lambda: self.ready), actor=self.name, activity="resync")

    async def _run(self, phase: float) -> None:
        # Learn the pools before taking rooms (the service's warm-up), then sweep forever.
        await asyncio.sleep(WARMUP_S + phase)
        self.ready = True
        self.world.log(self.name, "consumers bound, sweeping")
        self.world.checks.impairment_changed()
        # The service's loop; a failed pass is counted where the service logs it, and goes on.
        await self.controller.sweep_loop(
            lambda: True, on_error=lambda exc: self.world.checks.on_exception(self.name, "sweep", exc)
        )

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

    def crash(self) -> None:
        self.alive = False
        self.ready = False
        self.world.kv.unwatch(self.name)
        n = self.world.loop.cancel_actor(self.name)
        self.world.log(self.name, f"CRASH ({n} tasks cancelled at their await)")
        self.world.checks.impairment_changed()
