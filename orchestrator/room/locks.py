"""One task per room within a replica: a lock per room, gone when nobody holds or awaits it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holders and waiters: the entry goes when the last one leaves


class RoomLocks:
    """Entries are counted, not pruned by size: dropping a lock a woken waiter has not re-acquired
    yet would let a second task into the room."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def busy(self, room: str) -> bool:
        entry = self._entries.get(room)
        return entry is not None and entry.users > 0

    @contextlib.asynccontextmanager
    async def hold(self, room: str) -> AsyncIterator[None]:
        entry = self._entries.get(room)
        if entry is None:
            entry = self._entries[room] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[room]

    def __len__(self) -> int:
        return len(self._entries)
