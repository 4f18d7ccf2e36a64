"""Watch one room's KV record until it is what the caller waits for — no polling.

``drill kill-pool`` (every affected room speaking again), ``dispatch`` (the room settled) and the
tests (a room reaching a state) all wait this way. Open the watcher *before* causing the change
you wait for (kill, publish): the watch starts with the record as it is, so no transition can
slip between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from nats.js.kv import KeyValue

from orchestrator.records import RoomRecord
from orchestrator.store import room_key


@dataclass(frozen=True, slots=True)
class Watched:
    record: RoomRecord | None  # the last version seen (None: the key had none in time)
    reached: bool  # ``until(record)`` held: the wait ended because of it, not the time


@contextlib.asynccontextmanager
async def room_watcher(kv: KeyValue, room: str) -> AsyncIterator[KeyValue.KeyWatcher]:
    """A watcher on the room's key, stopped when the block ends."""
    watcher = await kv.watch(room_key(room))
    try:
        yield watcher
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]


async def watch_until(
    watcher: KeyValue.KeyWatcher, until: Callable[[RoomRecord], bool], within_s: float
) -> Watched:
    """Read the room's versions from ``watcher`` (the current one first) until ``until(record)``
    holds, ``within_s`` passes or the watch ends; deletes and purges are skipped."""
    last: RoomRecord | None = None
    try:
        async with asyncio.timeout(within_s):
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                last = RoomRecord.model_validate_json(entry.value)
                if until(last):
                    return Watched(last, True)
    except TimeoutError:
        pass
    return Watched(last, False)


async def wait_for_room(
    kv: KeyValue, room: str, until: Callable[[RoomRecord], bool], within_s: float
) -> Watched:
    """:func:`watch_until` on a watcher of its own (nothing to do between opening and waiting)."""
    async with room_watcher(kv, room) as watcher:
        return await watch_until(watcher, until, within_s)
