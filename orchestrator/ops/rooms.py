"""Room records as the operator commands read them: straight from the KV bucket, read-only."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from orchestrator.records import TERMINAL, RoomRecord, RoomState
from orchestrator.store import RoomStore
from shared import subjects


async def room_store(js: JetStreamContext, cell: subjects.Cell = subjects.SHARED) -> RoomStore | None:
    """The cell's rooms bucket, or None when it does not exist yet (no orchestrator has run there).

    Never creates it: an operator command must not change what it inspects.
    """
    try:
        kv = await js.key_value(cell.rooms_bucket)
    except BucketNotFoundError:
        return None
    try:
        archive: KeyValue | None = await js.key_value(cell.archive_bucket)
    except BucketNotFoundError:
        archive = None  # no room has ended since partitioned records (or none ever)
    return RoomStore(kv, archive=archive, bucket=cell.rooms_bucket)


async def read_rooms(
    js: JetStreamContext, cells: Sequence[subjects.Cell] = (subjects.SHARED,)
) -> list[RoomRecord]:
    """Every room record of ``cells`` now (each watch's initial snapshot), sorted by room name."""
    rooms: dict[str, RoomRecord] = {}
    for cell in cells:
        rooms.update(await _read_cell(js, cell))
    return [rooms[name] for name in sorted(rooms)]


async def _read_cell(js: JetStreamContext, cell: subjects.Cell) -> dict[str, RoomRecord]:
    store = await room_store(js, cell)
    if store is None:
        return {}
    rooms: dict[str, RoomRecord] = {}
    # aclosing: stop the KV watcher now, not whenever the abandoned generator is collected.
    async with contextlib.aclosing(store.watch()) as changes:
        async for change in changes:
            if change is None:
                break
            room, versioned = change
            if versioned is not None:
                rooms[room] = versioned.record
    return rooms


async def get_room(
    js: JetStreamContext, room: str, cells: Sequence[subjects.Cell] = (subjects.SHARED,)
) -> RoomRecord | None:
    """The room's record in the first of ``cells`` that has one (a live record before an ended one)."""
    found: RoomRecord | None = None
    for cell in cells:
        record = await _get_in_cell(js, room, cell)
        if record is not None and not record.terminal:
            return record
        found = found or record
    return found


async def _get_in_cell(js: JetStreamContext, room: str, cell: subjects.Cell) -> RoomRecord | None:
    """The room's record: the live one, or, for a room that ended, its full archived record with
    the notes written after its end (an old agent's removal) from the compact one."""
    store = await room_store(js, cell)
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
