"""The code under test, in one place: how a replica's room controller is built (the reconciler of
``orchestrator/room/``, with the replica's ``Ownership`` of its partitions) and its resync, and
what they need from the world to run deterministically.

The reconciler takes its clocks, its random source and its retry policy from the caller, so the
only thing a run still swaps is the module-level tracer its spans come from (see
:func:`deterministic`).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Protocol

from opentelemetry import trace

from orchestrator.index import RoomIndex
from orchestrator.livekit_gateway import DispatchJobs, ListedDispatch, LiveKitCallError, LiveRoom
from orchestrator.ownership import Ownership
from orchestrator.pools import PoolRegistry
from orchestrator.room import Clocks, Reconciler, observe
from orchestrator.room.resync import PassLog, Resync
from shared.config import SwitchboardConfig
from shared.messages import AgentStatus, RoomCreated, RoomEnded
from tests.sim.kv import SimKV
from tests.sim.livekit import SimLiveKit

__all__ = ["Subject", "deterministic", "make_replica", "make_resync"]


class Subject(Protocol):
    """The controller's public surface, all the simulator drives."""

    async def on_room_created(self, event: RoomCreated) -> bool: ...
    async def on_room_ended(self, event: RoomEnded, published_at: float | None = None) -> None: ...
    async def on_status(self, status: AgentStatus) -> None: ...
    async def sweep(self) -> None: ...
    async def sweep_loop(
        self, ready: Callable[[], bool], on_error: Callable[[Exception], None] | None = None
    ) -> None: ...


def make_replica(
    *,
    store: SimKV,
    gateway: SimLiveKit,
    config: SwitchboardConfig,
    registry: PoolRegistry,
    index: RoomIndex,
    replica: str,
    wall: Callable[[], float],
    mono: Callable[[], float],
    rng: random.Random,
    ownership: Ownership,
) -> Subject:
    return Reconciler(
        store=store,
        gateway=Gateway(gateway),
        config=config,
        registry=registry,
        index=index,
        replica=replica,
        clocks=Clocks(wall=wall, mono=mono),
        rng=rng,
        ownership=ownership,
    )


def make_resync(controller: Subject, gateway: SimLiveKit, passes: PassLog) -> Resync:
    """The replica's anti-entropy loop (``Resync.run``), over the same gateway contract: as in
    production, no lease (every replica passes over its own partitions), each pass logged."""
    assert isinstance(controller, Reconciler)
    return Resync(controller, Gateway(gateway), passes)


class Gateway:
    """The stand-in (LiveKit's answers) under the gateway's contract
    (orchestrator/livekit_gateway.py): a dispatch or participant already gone is not an error for
    delete and remove — LiveKit answers ``not_found``, the gateway returns."""

    def __init__(self, lk: SimLiveKit) -> None:
        self.lk = lk

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        return await self.lk.create_dispatch(room, agent_name, metadata)

    async def find_dispatch(self, room: str, agent_name: str, key: str) -> str | None:
        return await self.lk.find_dispatch(room, agent_name, key)

    async def dispatch_jobs(self, room: str, dispatch_id: str) -> DispatchJobs | None:
        return await self.lk.dispatch_jobs(room, dispatch_id)

    async def room_dispatches(self, room: str) -> list[ListedDispatch] | None:
        return await self.lk.room_dispatches(room)

    async def delete_dispatch(self, dispatch_id: str, room: str) -> None:
        try:
            await self.lk.delete_dispatch(dispatch_id, room)
        except LiveKitCallError as err:
            if err.reason != "not_found":
                raise

    async def remove_participant(self, room: str, identity: str) -> None:
        try:
            await self.lk.remove_participant(room, identity)
        except LiveKitCallError as err:
            if err.reason != "not_found":
                raise

    async def participants(self, room: str) -> frozenset[str] | None:
        return await self.lk.participants(room)

    async def roster(self, room: str) -> dict[str, str | None] | None:
        return await self.lk.roster(room)

    async def callers(self, room: str) -> frozenset[str] | None:
        return await self.lk.callers(room)

    async def room_exists(self, room: str) -> bool:
        return await self.lk.room_exists(room)

    async def room_info(self, room: str) -> LiveRoom | None:
        return await self.lk.room_info(room)

    async def list_rooms(self) -> list[LiveRoom]:
        return await self.lk.list_rooms()

    async def check_credentials(self) -> None:
        await self.lk.check_credentials()


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """For the length of a run: the room spans are no-ops (under pytest the session's recording
    TracerProvider would keep every span and draw its ids from the global ``random``), and the
    global ``random`` is seeded for anything else that might draw from it."""
    saved_random = random.getstate()
    saved_tracer = observe._tracer
    random.seed(seed)
    observe._tracer = trace.NoOpTracer()
    try:
        yield
    finally:
        observe._tracer = saved_tracer
        random.setstate(saved_random)
