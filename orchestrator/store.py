"""Room records in the JetStream KV bucket: get, create, compare-and-set update, watch.

Keys are ``r.<room>`` when the room name is a valid KV token, else ``x.<hex of the name>``, so any
LiveKit room name maps to one key and back.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from orchestrator.records import RoomRecord
from shared import subjects

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


def room_key(room: str) -> str:
    return f"r.{room}" if _TOKEN.fullmatch(room) else f"x.{room.encode().hex()}"


def room_from_key(key: str) -> str:
    kind, _, rest = key.partition(".")
    return rest if kind == "r" else bytes.fromhex(rest).decode()


class Conflict(RuntimeError):
    """Someone else wrote the record first (CAS lost): re-read and decide again."""


@dataclass(frozen=True, slots=True)
class Versioned:
    record: RoomRecord
    revision: int


async def open_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """Bind to the rooms bucket, creating it if missing (never reconfiguring an existing one)."""
    try:
        return await js.key_value(subjects.ROOMS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=subjects.ROOMS_BUCKET,
                description="Switchboard room records (state machine + timeline)",
                history=1,
                replicas=replicas,
                storage=StorageType.FILE,
            )
        )


class RoomStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def get(self, room: str) -> Versioned | None:
        try:
            entry = await self.kv.get(room_key(room))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if entry.value is None:
            return None
        return Versioned(RoomRecord.model_validate_json(entry.value), int(entry.revision or 0))

    async def create(self, record: RoomRecord) -> Versioned | None:
        """Write a new record; None when the room already has one (a duplicate event)."""
        try:
            revision = await self.kv.create(room_key(record.room), record.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return None
        return Versioned(record, revision)

    async def update(self, record: RoomRecord, revision: int) -> Versioned:
        """Compare-and-set: succeeds only if the stored revision is still ``revision``."""
        try:
            new = await self.kv.update(
                room_key(record.room), record.model_dump_json().encode(), last=revision
            )
        except KeyWrongLastSequenceError:
            raise Conflict(record.room) from None
        return Versioned(record, new)

    async def watch(self) -> AsyncGenerator[tuple[str, Versioned | None] | None, None]:
        """Every record now, then ``None`` (the snapshot is complete), then every change.

        Yields (room, Versioned) for a put and (room, None) for a delete/purge.
        """
        watcher = await self.kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    yield None
                    continue
                room = room_from_key(entry.key)
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    yield room, None
                else:
                    yield (
                        room,
                        Versioned(RoomRecord.model_validate_json(entry.value), int(entry.revision or 0)),
                    )
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
