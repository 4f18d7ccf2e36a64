"""The two doors the reconciler acts through, as protocols: the KV record store and LiveKit.

Production passes :class:`orchestrator.store.RoomStore` and
:class:`orchestrator.livekit_gateway.LiveKitGateway`; the simulator (tests/sim) passes seeded
stand-ins with faults.
"""

from __future__ import annotations

from typing import Protocol

from orchestrator.livekit_gateway import DispatchJobs, ListedDispatch, LiveRoom
from orchestrator.records import RoomRecord
from orchestrator.store import Versioned


class RecordStore(Protocol):
    async def get(self, room: str) -> Versioned | None: ...

    async def create(self, record: RoomRecord) -> Versioned | None: ...

    async def update(self, record: RoomRecord, revision: int) -> Versioned: ...


class LiveKit(Protocol):
    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str: ...

    async def find_dispatch(self, room: str, agent_name: str, key: str) -> str | None: ...

    async def dispatch_jobs(self, room: str, dispatch_id: str) -> DispatchJobs | None: ...

    async def room_dispatches(self, room: str) -> list[ListedDispatch] | None: ...

    async def delete_dispatch(self, dispatch_id: str, room: str) -> None: ...

    async def remove_participant(self, room: str, identity: str) -> None: ...

    async def participants(self, room: str) -> frozenset[str] | None: ...

    async def callers(self, room: str) -> frozenset[str] | None: ...

    async def room_info(self, room: str) -> LiveRoom | None: ...

    async def list_rooms(self) -> list[LiveRoom]: ...
