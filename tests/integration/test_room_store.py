"""Room records in the real KV bucket: terminal records expire by JetStream's per-message TTL,
live ones never do, and a bucket without TTL support keeps them (with a warning) rather than
failing the write."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from orchestrator.ops.rooms import get_room
from orchestrator.partitions import partition_of
from orchestrator.records import RoomRecord, RoomState
from orchestrator.store import (
    Conflict,
    RoomStore,
    UnreadableRecord,
    migrate_unpartitioned,
    open_archive,
    open_bucket,
    room_key,
)
from orchestrator.transitions import note, transition
from shared import subjects

STREAM = f"KV_{subjects.ROOMS_BUCKET}"


async def _ttl_header(nc: NATS, room: str) -> str | None:
    msg = await nc.jetstream().get_last_msg(STREAM, f"$KV.{subjects.ROOMS_BUCKET}.{room_key(room)}")
    return (msg.headers or {}).get("Nats-TTL")


async def test_terminal_records_expire_and_live_ones_stay(nc: NATS) -> None:
    js = nc.jetstream()
    store = RoomStore(await open_bucket(js), js, terminal_ttl_s=1.0)
    live = await store.create(RoomRecord(room="ornina-live"))
    done = await store.create(RoomRecord(room="ornina-done"))
    assert live is not None and done is not None
    live = await store.update(live.record.model_copy(update={"state": RoomState.JOINED}), live.revision)
    ended = await store.update(done.record.model_copy(update={"state": RoomState.ENDED}), done.revision)
    assert await _ttl_header(nc, "ornina-live") is None
    assert await _ttl_header(nc, "ornina-done") is not None
    # Still a compare-and-set: a stale revision loses.
    with pytest.raises(Conflict):
        await store.update(ended.record, done.revision)
    # JetStream announces nothing when a message expires (no delete marker): look, within a bound.
    async with asyncio.timeout(15):
        while await store.get("ornina-done") is not None:  # noqa: ASYNC110 (there is no event)
            await asyncio.sleep(0.2)
    assert (await store.get("ornina-live")) == live
    # The room name is free again: a new incarnation starts a fresh record.
    assert await store.create(RoomRecord(room="ornina-done")) is not None


async def test_a_bucket_without_ttl_support_keeps_terminal_records(
    nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    # The rooms bucket as a server or client from before per-message TTLs would have made it.
    await js.add_stream(
        StreamConfig(
            name=STREAM,
            subjects=[f"$KV.{subjects.ROOMS_BUCKET}.>"],
            allow_rollup_hdrs=True,
            deny_delete=True,
            max_msgs_per_subject=1,
            storage=StorageType.FILE,
            allow_msg_ttl=False,
        )
    )
    store = RoomStore(await open_bucket(js), js, terminal_ttl_s=1.0)
    created = await store.create(RoomRecord(room="ornina-old-bucket"))
    assert created is not None
    with caplog.at_level(logging.WARNING, logger="orchestrator.store"):
        failed = await store.update(
            created.record.model_copy(update={"state": RoomState.FAILED}), created.revision
        )
    assert "does not allow per-message TTLs" in caplog.text
    assert (await store.get("ornina-old-bucket")) == failed
    assert await _ttl_header(nc, "ornina-old-bucket") is None


async def test_an_unreadable_record_is_named_on_read_and_skipped_by_the_watch(
    nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    """6. One corrupt record (or one from an incompatible build) must not stop the watch every
    replica's index runs on: it is skipped with an error naming the room, the others flow on."""
    js = nc.jetstream()
    kv = await open_bucket(js)
    store = RoomStore(kv)
    await kv.put(room_key("ornina-bad"), b'{"room": "ornina-bad", "state": "no-such-state"}')
    newer = RoomRecord(room="ornina-newer").model_dump_json().replace('"v":1', '"v":1,"later_field":[1]')
    await kv.put(room_key("ornina-newer"), newer.encode())
    with pytest.raises(UnreadableRecord, match="ornina-bad"):
        await store.get("ornina-bad")
    seen: dict[str, RoomRecord | None] = {}
    with caplog.at_level(logging.ERROR, logger="orchestrator.store"):
        async with asyncio.timeout(10), contextlib.aclosing(store.watch()) as changes:
            async for change in changes:
                if change is None:
                    break  # the snapshot is complete
                room, versioned = change
                seen[room] = versioned.record if versioned else None
    assert seen["ornina-bad"] is None
    newer_rec = seen["ornina-newer"]
    assert newer_rec is not None and newer_rec.state == RoomState.RECEIVED
    assert any("ornina-bad" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)


async def test_a_terminal_record_created_first_expires_and_is_created_once(nc: NATS) -> None:
    """The tombstone of a room whose end came before its start: created once, with a TTL."""
    js = nc.jetstream()
    store = RoomStore(await open_bucket(js), js, terminal_ttl_s=60.0)
    tomb = RoomRecord(room="ornina-tomb", state=RoomState.ENDED, reason="room_ended")
    assert await store.create(tomb) is not None
    assert await _ttl_header(nc, "ornina-tomb") is not None
    assert await store.create(tomb) is None  # the second is a duplicate
    assert await store.create(RoomRecord(room="ornina-tomb")) is None


async def test_the_watch_skips_unparsed_what_its_reader_already_holds(nc: NATS) -> None:
    """A replica applies its own writes when it makes them; the watch skips those (no newer than
    what the reader holds) before parsing them, and still brings every newer one."""
    js = nc.jetstream()
    store = RoomStore(await open_bucket(js))
    mine = await store.create(RoomRecord(room="ornina-mine"))
    theirs = await store.create(RoomRecord(room="ornina-theirs"))
    assert mine is not None and theirs is not None
    held = {"ornina-mine": mine.revision}
    seen: list[tuple[str, int]] = []
    async with asyncio.timeout(10), contextlib.aclosing(store.watch(held.get)) as changes:
        async for change in changes:
            if change is None:
                updated = await store.update(
                    mine.record.model_copy(update={"state": RoomState.DISPATCHING}), mine.revision
                )
                continue
            room, versioned = change
            assert versioned is not None
            seen.append((room, versioned.revision))
            if room == "ornina-mine":
                break  # the newer write
    assert seen == [("ornina-theirs", theirs.revision), ("ornina-mine", updated.revision)]


async def test_records_under_the_keys_of_a_build_before_partitions_move_once(nc: NATS) -> None:
    """A replica of this build moves ``r.<room>`` / ``x.<hex>`` records to their partitioned keys
    (a terminal one keeps expiring); a second replica doing the same at once moves nothing twice,
    and a partition's watch then sees the moved record."""
    js = nc.jetstream()
    kv = await open_bucket(js)
    store = RoomStore(kv, js, terminal_ttl_s=60.0)
    live = RoomRecord(room="ornina-old-live", state=RoomState.SPEAKING, pool="eu-central-a")
    done = RoomRecord(room="old room with spaces", state=RoomState.ENDED)
    await kv.put("r.ornina-old-live", live.model_dump_json().encode())
    await kv.put(f"x.{done.room.encode().hex()}", done.model_dump_json().encode())
    moved = await asyncio.gather(migrate_unpartitioned(store), migrate_unpartitioned(store))
    assert sum(moved) >= 2
    got_live, got_done = await store.get("ornina-old-live"), await store.get(done.room)
    assert got_live is not None and got_live.record == live
    assert got_done is not None and got_done.record == done
    assert await _ttl_header(nc, done.room) is not None
    for old in ("r.ornina-old-live", f"x.{done.room.encode().hex()}"):
        with pytest.raises((KeyNotFoundError, KeyDeletedError)):
            await kv.get(old)
    assert await migrate_unpartitioned(store) == 0
    seen: list[str] = []
    partition = partition_of("ornina-old-live")
    # Read until the moved record shows, not until the end-of-replay marker: nats.py's KV watch can
    # put that marker first when the replay is on the wire but not read yet as it asks the
    # consumer's pending count (0 by then), which made this test fail under load.
    async with asyncio.timeout(10), contextlib.aclosing(store.watch(partition=partition)) as changes:
        async for change in changes:
            if change is not None:
                seen.append(change[0])
            if "ornina-old-live" in seen:
                break
    assert all(partition_of(room) == partition for room in seen)


async def test_the_end_of_a_room_is_archived_whole_and_kept_compact_for_an_hour(nc: NATS) -> None:
    """The write that ends a room puts its full record in the archive and a compact one (the
    history from its end on) in the rooms bucket, with the short TTL; a later note (an old agent's
    removal) goes to the compact one only; ``explain``'s read joins the two."""
    js = nc.jetstream()
    archive = await open_archive(js, 3600)
    store = RoomStore(await open_bucket(js), js, terminal_ttl_s=600.0, archive=archive)
    room = "ornina-archived"
    created = await store.create(RoomRecord(room=room, sid="RM_1"))
    assert created is not None
    rec = created.record
    steps = [
        RoomState.DISPATCHING,
        RoomState.DISPATCHED,
        RoomState.JOINED,
        RoomState.SPEAKING,
        RoomState.ENDED,
    ]
    for at, state in enumerate(steps, start=1):
        rec = transition(rec, state, now=at, event=state.value)
    ended = await store.update(rec, created.revision)
    assert [h.state for h in ended.record.history] == [RoomState.ENDED]  # what the bucket keeps
    assert (await store.get(room)) == ended and await _ttl_header(nc, room) is not None
    full = await store.archived(room)
    assert full is not None and [h.state for h in full.history] == steps
    noted = await store.update(
        note(ended.record, now=9.0, event="removal", detail="old agent gone"), ended.revision
    )
    assert len(noted.record.history) == 2 and (await store.archived(room)) == full  # not archived again
    shown = await get_room(js, room)
    assert shown is not None and [h.event for h in shown.history][-2:] == ["ended", "removal"]
    assert len(shown.history) == len(full.history) + 1
