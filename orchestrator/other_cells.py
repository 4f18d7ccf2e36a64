"""With per-region state: whether another region's cell already holds a room.

LiveKit lists every node's rooms to every region's resync, and nothing in a listed room says which
node or region hosts it. Before a region adopts a room whose event never reached it, it asks the
other regions' buckets (across the gateways): a room any of them knows is theirs, and a region it
cannot ask (a cut gateway, a lost region) makes the answer unknown, so nobody adopts the room until
it can be asked. Reads only; each bucket is bound on first use.
"""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError

from orchestrator.store import RoomStore
from shared.config import SwitchboardConfig
from shared.subjects import Cell

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 2.0


def other_cells(js: JetStreamContext, config: SwitchboardConfig, cell: Cell) -> OtherCells | None:
    """The other regions' cells, to ask from ``cell``; None for the shared cell (no other)."""
    if cell.region is None:
        return None
    return OtherCells(js, [Cell(r) for r in sorted(config.known_regions()) if r != cell.region])


class OtherCells:
    def __init__(self, js: JetStreamContext, cells: list[Cell]) -> None:
        self._js = js
        self._cells = cells
        self._stores: dict[Cell, RoomStore] = {}

    async def known(self, room: str) -> bool | None:
        """True: another region's cell has a record of ``room``; False: none has; None: at least
        one could not be asked (then the room is left for a later pass)."""
        for cell in self._cells:
            try:
                async with asyncio.timeout(ASK_TIMEOUT_S):
                    store = self._stores.get(cell)
                    if store is None:
                        try:
                            kv = await self._js.key_value(cell.rooms_bucket)
                        except BucketNotFoundError:
                            continue  # a region that never ran holds no room

                        store = self._stores[cell] = RoomStore(kv, bucket=cell.rooms_bucket)
                    if await store.get(room) is not None:
                        return True
            except Exception as err:  # an unreachable region, JetStream busy
                log.debug("resync: cannot ask %s about room %s: %r", cell.rooms_bucket, room, err)
                return None
        return False
