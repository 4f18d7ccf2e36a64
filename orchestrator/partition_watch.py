"""Keep the room index to exactly the partitions this replica tracks: one KV watch per partition,
started when the membership gives the partition to this replica and stopped (its rooms dropped
from the index) when it goes to another. Each watch replays its partition's records, then
follows its changes; its position is what this replica reports as applied for the partition.

A watch that fails is restarted on its own after a pause (the others keep going); the index is
synced when every tracked partition has been replayed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from orchestrator.index import RoomIndex
from orchestrator.ownership import Ownership
from orchestrator.store import RoomStore

log = logging.getLogger(__name__)

RETRY_S = 1.0
# Partitions replaying at once. All 32 at once made nats-server cut a replica at 100,000 rooms as
# a slow consumer (over 64 MB pending), and start-up took 16-29 s instead of ~6 (bench section 11).
REPLAYING = 4


class PartitionWatches:
    def __init__(
        self,
        store: RoomStore,
        index: RoomIndex,
        ownership: Ownership,
        on_synced: Callable[[bool], None],
    ) -> None:
        self.store = store
        self.index = index
        self.ownership = ownership
        self._on_synced = on_synced
        self.loaded: set[int] = set()
        self._replaying = asyncio.Semaphore(REPLAYING)

    @property
    def synced(self) -> bool:
        return self.ownership.joined and self.ownership.owned <= self.loaded

    async def run(self) -> None:
        """Follow the ownership until cancelled."""
        watches: dict[int, asyncio.Task[None]] = {}
        async with asyncio.TaskGroup() as tg:
            while True:
                await self.ownership.changed.wait()
                self.ownership.changed.clear()
                want = self.ownership.owned
                lost = [p for p in watches if p not in want]
                for partition in lost:
                    # Cancelled before this coroutine awaits again (and, should the cancellation be
                    # lost, _follow stops at its next change: the partition is no longer owned).
                    watches.pop(partition).cancel()
                    self.loaded.discard(partition)
                    self.ownership.applied.pop(partition, None)
                if lost:
                    dropped = self.index.drop(self.ownership.tracks)
                    log.info("gave up %d partition(s): %d rooms left the index", len(lost), dropped)
                for partition in sorted(want - watches.keys()):
                    name = f"watch-p{partition:02d}"
                    watches[partition] = tg.create_task(self._follow(partition), name=name)
                self._on_synced(self.synced)

    async def _follow(self, partition: int) -> None:
        def taken(revision: int) -> None:
            if revision > self.ownership.applied.get(partition, 0):
                self.ownership.applied[partition] = revision

        # Given up: the task is cancelled too, but Python 3.11's asyncio.wait_for (which the NATS
        # client awaits in) can lose a cancellation; a watch that outlived its partition must not
        # put the partition's rooms back into the index (the bench saw rooms tracked twice).
        while partition in self.ownership.owned:
            try:
                async with contextlib.AsyncExitStack() as replay:
                    await replay.enter_async_context(self._replaying)  # left once replayed
                    # aclosing: on cancellation the watcher's subscription is stopped now, not at
                    # GC time (a leftover one would hold up the connection drain on shutdown).
                    changes = self.store.watch(self.index.revision, partition, taken, skip_at_rest=True)
                    async with contextlib.aclosing(changes):
                        async for change in changes:
                            if partition not in self.ownership.owned:
                                return
                            if change is None:
                                await replay.aclose()
                                self.loaded.add(partition)
                                self._on_synced(self.synced)
                            else:
                                self.index.apply(*change)
            except Exception as err:
                log.warning("watch of partition %d failed, restarting: %r", partition, err)
            await asyncio.sleep(RETRY_S)
