"""A continuously updated view of pools and rooms, for `status --watch` and `switchboard dev`.

:meth:`LiveView.run` subscribes to heartbeats and watches the rooms bucket until cancelled (the
caller owns it in its TaskGroup); :meth:`snapshot` reads the current state at any moment, and
:meth:`wait_rooms` awaits a condition on the room records without polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS

from orchestrator.ops.census import PoolCensus
from orchestrator.ops.rooms import room_store
from orchestrator.ops.status import StatusSnapshot
from orchestrator.records import RoomRecord
from orchestrator.store import RoomStore
from shared import subjects
from shared.config import SwitchboardConfig

log = logging.getLogger(__name__)

BUCKET_WAIT_TRIES = 240
RoomsPredicate = Callable[[dict[str, RoomRecord]], bool]


class LiveView:
    def __init__(self, nc: NATS, config: SwitchboardConfig, region: str | None = None) -> None:
        self._nc = nc
        # The region's rooms with per-region state (every region's when none is given).
        self._cells = config.cells(region)
        self.census = PoolCensus(config)
        self.rooms: dict[str, RoomRecord] = {}
        self._changed = asyncio.Condition()

    async def run(self) -> None:
        sub = await self._nc.subscribe(subjects.POOL_HEARTBEAT_WILDCARD, cb=self.census.on_msg)
        try:
            async with asyncio.TaskGroup() as tg:
                for cell in self._cells:
                    tg.create_task(self._watch_rooms(cell))
        finally:
            await sub.unsubscribe()

    async def _watch_rooms(self, cell: subjects.Cell) -> None:
        store = await self._wait_for_bucket(cell)
        async for change in store.watch():
            if change is None:
                continue
            room, versioned = change
            async with self._changed:
                if versioned is None:
                    self.rooms.pop(room, None)
                else:
                    self.rooms[room] = versioned.record
                self._changed.notify_all()

    async def _wait_for_bucket(self, cell: subjects.Cell) -> RoomStore:
        # The orchestrator creates the bucket when it starts; `dev` may get here first.
        js = self._nc.jetstream()
        for _ in range(BUCKET_WAIT_TRIES):
            store = await room_store(js, cell)
            if store is not None:
                return store
            await asyncio.sleep(0.5)
        raise RuntimeError(
            f"no rooms bucket after {BUCKET_WAIT_TRIES * 0.5:.0f}s: is an orchestrator running?"
        )

    def snapshot(self) -> StatusSnapshot:
        now = asyncio.get_running_loop().time()
        rooms = [self.rooms[name] for name in sorted(self.rooms)]
        return StatusSnapshot(self.census.views(now), rooms, time.time())

    async def wait_rooms(self, predicate: RoomsPredicate, within_s: float) -> dict[str, RoomRecord]:
        """Until ``predicate(rooms)`` holds; raises TimeoutError after ``within_s``."""
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self.rooms))
            return dict(self.rooms)
