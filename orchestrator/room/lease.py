"""The claim on an in-flight step, renewed for as long as this replica works on it, and only that long."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orchestrator.room.ports import RecordStore
from orchestrator.store import Conflict, Versioned

log = logging.getLogger(__name__)


class Lease:
    """``current``: the record as last written by this replica while it holds the step. A live
    owner keeps its room however slow LiveKit is; a dead one stops renewing and loses it within
    ``lease_s``. ``lost``: someone else wrote the record (our final write will say what happened)."""

    def __init__(
        self,
        current: Versioned,
        store: RecordStore,
        wall: Callable[[], float],
        lease_s: float,
        seen: Callable[[Versioned], Versioned],
    ) -> None:
        self.current = current
        self.lost = False
        self._store = store
        self._wall = wall
        self._lease_s = lease_s
        self._seen = seen

    def in_doubt(self) -> bool:
        """Lost, or a renewal missed (each comes a third of the lease before the last runs out):
        start nothing new under it."""
        return self.lost or (self.current.record.lease_until or 0.0) - self._wall() < self._lease_s / 3

    async def keep(self) -> None:
        """Renew every third of the lease (run it alongside the slow step)."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            renewed = self.current.record.model_copy(update={"lease_until": self._wall() + self._lease_s})
            try:
                self.current = self._seen(await self._store.update(renewed, self.current.revision))
            except Conflict:
                self.lost = True
                return
            except Exception as err:  # KV away: keep trying until the step ends or the lease runs out
                log.warning("lease renewal for %s failed: %r", renewed.room, err)
