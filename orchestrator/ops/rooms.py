"""Room records as the operator commands read them: straight from the KV bucket, read-only."""

from __future__ import annotations

import contextlib
from collections import Counter

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from orchestrator.records import TERMINAL, RoomRecord, RoomState
from orchestrator.store import RoomStore
from shared import subjects


async def room_store(js: JetStreamContext) -> RoomStore | None:
    """The rooms bucket, or None when it does not exist yet (no orchestrator has ever run).

    Never creates it: an operator command must not change what it inspects.
    """
    try:
        kv = await js.key_value(subjects.ROOMS_BUCKET)
    except BucketNotFoundError:
        return None
    try:
        archive: KeyValue | None = await js.key_value(subjects.ARCHIVE_BUCKET)
    except BucketNotFoundError:
        archive = None  # no room has ended since partitioned records (or none ever)
    return RoomStore(kv, archive=archive)


async def read_rooms(js: JetStreamContext) -> list[RoomRecord]:
    """Every room record now (the watch's initial snapshot), sorted by room name."""
    store = await room_store(js)
    if store is None:
        return []
    rooms: dict[str, RoomRecord] = {}
    # aclosing: stop the KV watcher now, not whenever the abandoned generator is collected.
    async with contextlib.aclosing(store.watch()) as changes:
        async for change in changes:
            if change is None:
                break
            room, versioned = change
            if versioned is not None:
                rooms[room] = versioned.record
    return [rooms[name] for name in sorted(rooms)]


async def get_room(js: JetStreamContext, room: str) -> RoomRecord | None:
    """The room's record: the live one, or, for a room that ended, its full archived record with
    the notes written after its end (an old agent's removal) from the compact one."""
    store = await room_store(js)
    if store is None:
        return None
    got = await store.get(room)
    live = got.record if got else None
    if live is not None and not live.terminal:
        return live
    archived = await store.archived(room)
    if archived is None or (live is not None and live.sid != archived.sid):
        return live
    if live is None:
        return archived
    last = archived.history[-1].at if archived.history else archived.received_at
    later = [h for h in live.history if h.at > last]
    return live.model_copy(update={"history": [*archived.history, *later]})


def by_state(records: list[RoomRecord]) -> dict[str, int]:
    """Counts per state, in state-machine order, zero counts left out."""
    counts = Counter(r.state for r in records)
    return {s.value: counts[s] for s in RoomState if counts[s]}


def is_live(record: RoomRecord) -> bool:
    return record.state not in TERMINAL
