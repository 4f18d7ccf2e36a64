"""Room records in the JetStream KV bucket: get, create, compare-and-set update, watch.

Keys are ``p<nn>.r.<room>`` when the room name is a valid KV token, else ``p<nn>.x.<hex of the
name>``, so any LiveKit room name maps to one key and back; ``<nn>`` is the room's partition
(:mod:`orchestrator.partitions`), so a replica watches only the partitions it owns. Builds before
partitions wrote ``r.<room>`` / ``x.<hex>``: :func:`migrate_unpartitioned` moves those once.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from orchestrator.partitions import partition_of
from orchestrator.records import TERMINAL, RoomRecord
from shared import bus, subjects

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
# JetStream's "wrong last sequence" (a lost compare-and-set) and "per-message TTL is disabled".
_WRONG_LAST = frozenset({10071, 10164})
_TTL_DISABLED = 10166


def room_key(room: str) -> str:
    return f"{partition_prefix(partition_of(room))}.{_unpartitioned_key(room)}"


def partition_prefix(partition: int) -> str:
    return f"p{partition:02d}"


def _unpartitioned_key(room: str) -> str:
    return f"r.{room}" if _TOKEN.fullmatch(room) else f"x.{room.encode().hex()}"


def room_from_key(key: str) -> str:
    kind, _, rest = key.partition(".")
    if kind.startswith("p") and kind[1:].isdigit():
        kind, _, rest = rest.partition(".")
    return rest if kind == "r" else bytes.fromhex(rest).decode()


class Conflict(RuntimeError):
    """Someone else wrote the record first (CAS lost): re-read and decide again."""


class UnreadableRecord(ValueError):
    """A stored record this build cannot read (corrupt, or from an incompatible build). Only the
    room it belongs to is affected: its messages are dead-lettered, the watch skips it."""

    def __init__(self, room: str, error: Exception) -> None:
        super().__init__(f"room {room!r}: unreadable record ({type(error).__name__}: {str(error)[:200]})")
        self.room = room


# The head of a record as this build writes it (pydantic's compact JSON, fields in declaration
# order: v, room, sid, state): its state, read without parsing the record.
_STRING = rb'"(?:[^"\\]|\\.)*"'
_HEAD = re.compile(
    rb'\{"v":\d+,"room":' + _STRING + rb',"sid":(?:null|' + _STRING + rb'),"state":"([a-z_]+)"'
)
_AT_REST = frozenset(s.value.encode() for s in TERMINAL)


def at_rest(data: bytes) -> bool:
    """Whether ``data`` is a terminal record with no old agent left to remove, told from its bytes
    (a room that ended leaves its record for ``ended_record_ttl_s``: most of what a partition's
    watch replays, and nothing a replica's index keeps). Conservative: a record written in any
    other form, or naming any replaced dispatch not removed, is not at rest here (it is parsed)."""
    head = _HEAD.match(data)
    return head is not None and head.group(1) in _AT_REST and b'"removed":false' not in data


def _parse(room: str, data: bytes) -> RoomRecord:
    try:
        return RoomRecord.model_validate_json(data)
    except ValueError as err:
        raise UnreadableRecord(room, err) from None


@dataclass(frozen=True, slots=True)
class Versioned:
    record: RoomRecord
    revision: int


async def open_bucket(
    js: JetStreamContext, replicas: int = 1, cell: subjects.Cell = subjects.SHARED
) -> KeyValue:
    """Bind to the rooms bucket, creating it if missing (never reconfiguring an existing one)."""
    return await open_or_create_kv(
        js, cell.rooms_bucket, "Switchboard room records (state machine + timeline)", replicas, cell=cell
    )


async def open_or_create_kv(
    js: JetStreamContext,
    bucket: str,
    description: str,
    replicas: int,
    storage: StorageType = StorageType.FILE,
    max_age_s: float | None = None,
    limit_marker_ttl_s: float | None = None,
    cell: subjects.Cell = subjects.SHARED,
) -> KeyValue:
    """Bind to a KV bucket of ours (history 1), creating it if missing (never reconfiguring one),
    in the NATS cluster of its ``cell``."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                description=description,
                history=1,
                replicas=replicas,
                storage=storage,
                ttl=max_age_s,
                limit_marker_ttl=limit_marker_ttl_s,
                placement=bus.placement(cell),
                # Reads answered by the stream's servers themselves ($JS.API.DIRECT.GET), not by the
                # JetStream API layer, which answers 503 "temporarily unavailable" whenever the
                # supercluster's meta leader is out of reach (a cut gateway, for 5 s after a heal):
                # a cut-off region still reads its own records. Writes are compare-and-set either way.
                direct=True,
            )
        )


async def open_archive(
    js: JetStreamContext, keep_s: float, replicas: int = 1, cell: subjects.Cell = subjects.SHARED
) -> KeyValue:
    """Bind to the archive of ended rooms' full records, creating it if missing: each kept
    ``keep_s`` (0: for good) from its last write."""
    description = "Switchboard: the full records of ended rooms, for explain"
    return await open_or_create_kv(
        js, cell.archive_bucket, description, replicas, max_age_s=keep_s or None, cell=cell
    )


class RoomStore:
    """``terminal_ttl_s``: a record written in a terminal state (ended, failed, ignored) expires
    from the bucket that long after, by JetStream's per-message TTL — nothing has to sweep for it,
    and a later write of the room (a new incarnation) starts a fresh, TTL-free message. ``None`` or 0
    keeps terminal records for good.

    ``archive``: the write that ends a room puts its full record there first, and the rooms
    bucket keeps only its compact form (:meth:`RoomRecord.compacted`: the history from its end on),
    so the replicas' watches replay small records of ended rooms, and only for ``terminal_ttl_s``;
    ``explain`` reads the archive (:meth:`archived`)."""

    def __init__(
        self,
        kv: KeyValue,
        js: JetStreamContext | None = None,
        terminal_ttl_s: float | None = None,
        archive: KeyValue | None = None,
        bucket: str = subjects.ROOMS_BUCKET,
    ) -> None:
        self.kv = kv
        self._bucket = bucket  # kv's name (its cell's rooms bucket), for the TTL writes' subject
        self._js = js
        self._terminal_ttl_s = terminal_ttl_s if js is not None and terminal_ttl_s else None
        self.archive = archive

    async def archived(self, room: str) -> RoomRecord | None:
        """The room's full record as it ended (the last time it ended); None when not archived."""
        if self.archive is None:
            return None
        try:
            entry = await self.archive.get(room_key(room))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return _parse(room, entry.value) if entry.value else None

    async def _to_write(self, record: RoomRecord, creating: bool) -> RoomRecord:
        """What goes into the rooms bucket. A record that ends the room: its full form into the
        archive first (on the write that ends it, or creates it ended), its compact form here."""
        if self.archive is None or not record.terminal:
            return record
        compact = record.compacted()
        if creating or len(compact.history) != len(record.history):
            # Before the compare-and-set: one that then loses leaves an archived end the winner's
            # own end overwrites (explain prefers a live record over the archive).
            await self.archive.put(room_key(record.room), record.model_dump_json().encode())
        return compact

    async def get(self, room: str) -> Versioned | None:
        try:
            entry = await self.kv.get(room_key(room))
        except (KeyNotFoundError, KeyDeletedError):
            return None
        if entry.value is None:
            return None
        return Versioned(_parse(room, entry.value), int(entry.revision or 0))

    async def create(self, record: RoomRecord) -> Versioned | None:
        """Write a new record; None when the room already has one (a duplicate event). A terminal
        one (a room whose end came first) expires like any terminal record."""
        record = await self._to_write(record, creating=True)
        if record.terminal and self._terminal_ttl_s is not None:
            data = record.model_dump_json().encode()
            try:
                # Expected last sequence 0: only if the key has never been written (or was purged).
                written = await self._update_expiring(record, data, 0, self._terminal_ttl_s)
            except Conflict:
                return None
            if written is not None:
                return written
        try:
            revision = await self.kv.create(room_key(record.room), record.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return None
        return Versioned(record, revision)

    async def update(self, record: RoomRecord, revision: int) -> Versioned:
        """Compare-and-set: succeeds only if the stored revision is still ``revision``."""
        record = await self._to_write(record, creating=False)
        data = record.model_dump_json().encode()
        if record.terminal and self._terminal_ttl_s is not None:
            written = await self._update_expiring(record, data, revision, self._terminal_ttl_s)
            if written is not None:
                return written
        try:
            new = await self.kv.update(room_key(record.room), data, last=revision)
        except KeyWrongLastSequenceError:
            raise Conflict(record.room) from None
        return Versioned(record, new)

    async def _update_expiring(
        self, record: RoomRecord, data: bytes, revision: int, ttl_s: float
    ) -> Versioned | None:
        """The same compare-and-set as a KV update, with a TTL on the message; None when the bucket
        does not allow per-message TTLs (created before they existed): then kept for good."""
        assert self._js is not None
        subject = f"$KV.{self._bucket}.{room_key(record.room)}"
        try:
            ack = await self._js.publish(
                subject, data, headers={"Nats-Expected-Last-Subject-Sequence": str(revision)}, msg_ttl=ttl_s
            )
        except APIError as err:
            if err.err_code in _WRONG_LAST:
                raise Conflict(record.room) from None
            if err.err_code != _TTL_DISABLED:
                raise
            log.warning(
                "the %s bucket does not allow per-message TTLs: terminal room records are kept "
                "until deleted by hand (recreate the bucket to get retention)",
                self._bucket,
            )
            self._terminal_ttl_s = None
            return None
        return Versioned(record, ack.seq)

    async def watch(
        self,
        held: Callable[[str], int | None] | None = None,
        partition: int | None = None,
        applied: Callable[[int], None] | None = None,
        skip_at_rest: bool = False,
    ) -> AsyncGenerator[tuple[str, Versioned | None] | None, None]:
        """Every record now, then ``None`` (the snapshot is complete), then every change: of one
        ``partition``, or of all.

        Yields (room, Versioned) for a put and (room, None) for a delete/purge, and with
        ``skip_at_rest`` for a terminal record with nothing left to remove (:func:`at_rest`: not
        parsed; a room index keeps no such record). ``held``: the
        revision the reader already holds of a room; a put no newer is skipped before it is
        parsed (a replica's own writes, applied when written: parsing a record with its history
        was 5 % of a replica's CPU per room). ``applied`` is told the revision of every entry
        once the reader has taken it (skipped ones included): the watch's position.
        """
        keys = ">" if partition is None else f"{partition_prefix(partition)}.>"
        watcher = await self.kv.watch(keys)
        taken = applied or (lambda _revision: None)
        try:
            async for entry in watcher:
                if entry is None:
                    yield None
                    continue
                revision = int(entry.revision or 0)
                room = room_from_key(entry.key)
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    yield room, None
                elif held is not None and (have := held(room)) is not None and have >= revision:
                    pass
                elif skip_at_rest and at_rest(entry.value):
                    yield room, None  # newer than what the reader holds: it forgets the room
                else:
                    try:
                        record = _parse(room, entry.value)
                    except UnreadableRecord as err:
                        # One bad record must not stop the watch (and with it every replica).
                        log.error("%s; skipped by the room index", err)
                        yield room, None
                    else:
                        yield room, Versioned(record, revision)
                # The reader asks for the next change only once it has taken this one.
                taken(revision)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]


async def migrate_unpartitioned(store: RoomStore) -> int:
    """Move the records a build before partitions wrote (``r.<room>``, ``x.<hex>``) to their
    partitioned keys; how many moved. Idempotent, and safe for replicas of this build to run at
    once (a create that finds the new key written keeps it; the old key is deleted only at the
    revision read). Replicas of the older build must be stopped first: they would keep writing
    the old keys."""
    moved = 0
    for prefix in ("r", "x"):
        watcher = await store.kv.watch(f"{prefix}.>")
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    continue
                room = room_from_key(entry.key)
                try:
                    record = _parse(room, entry.value)
                except UnreadableRecord as err:
                    log.error("%s; left under its old key %s", err, entry.key)
                    continue
                await store.create(record)  # None: a replica of this build moved it already
                with contextlib.suppress(APIError):  # changed since: whoever changed it moves it
                    await store.kv.delete(entry.key, last=entry.revision)
                moved += 1
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    if moved:
        log.info("moved %d room records to partitioned keys", moved)
    return moved
