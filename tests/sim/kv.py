"""The JetStream KV bucket of room records, simulated: get / create / compare-and-set update, and
watches of one partition each (``orchestrator.store.RoomStore.watch``), as the replicas' partition
watches (``orchestrator.partition_watch.PartitionWatches``) open and close them.

A call reaches the "server" after a seeded delay, is applied there (the compare-and-set decided at
that instant), and its answer travels back after another. Both legs are scheduled on the loop, not
awaited by the caller: a caller cancelled mid-call (a crashed replica) still has its write land,
as a request already on the wire does. Faults: a timeout before the write was applied, a timeout
*after* it was applied (the ambiguous one), an outage (every call times out; a watch cannot be
opened).

Records are stored as the JSON the real store writes (``model_dump_json``; a terminal record in its
compact form, as the store with an archive writes it) and parsed on every read and every watch
delivery, so the serialisation the rewrite may change is exercised too.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from orchestrator.partitions import partition_of
from orchestrator.records import RoomRecord
from orchestrator.room.resync import PassLog, PassReport
from orchestrator.store import Conflict, Versioned, at_rest
from tests.sim.config import KV_TIMEOUT_S
from tests.sim.faults import Call, Faults
from tests.sim.loop import ACTIVITY, ACTOR, VirtualLoop

if TYPE_CHECKING:
    from tests.sim.world import World

T = TypeVar("T")


class SimKV:
    """The RoomStore surface the controller uses: ``get``, ``create``, ``update``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.loop: VirtualLoop = world.loop
        self.faults: Faults = world.faults
        self._data: dict[str, tuple[bytes, int]] = {}
        self._states: dict[str, RoomRecord] = {}  # the last record written per room, unparsed
        self._seq = 0  # the stream sequence: a revision is global across keys, as in JetStream
        self._calls: dict[tuple[str, str], int] = {}
        self._partitions: dict[str, int] = {}  # room -> its partition (a hash: computed once)
        self._watches: dict[int, list[PartitionWatch]] = {}  # partition -> its open watches

    # -- the RoomStore surface ---------------------------------------------------------------------

    async def get(self, room: str) -> Versioned | None:
        def apply() -> Versioned | None:
            entry = self._data.get(room)
            if entry is None:
                return None
            return Versioned(RoomRecord.model_validate_json(entry[0]), entry[1])

        return await self._call("get", room, None, apply)

    async def create(self, record: RoomRecord) -> Versioned | None:
        record = _stored(record)
        data = record.model_dump_json().encode()

        def apply() -> Versioned | None:
            if record.room in self._data:
                return None
            return Versioned(record, self._commit(record.room, data, record))

        return await self._call("create", record.room, record.state.value, apply)

    async def update(self, record: RoomRecord, revision: int) -> Versioned:
        record = _stored(record)
        data = record.model_dump_json().encode()

        def apply() -> Versioned:
            entry = self._data.get(record.room)
            if entry is None or entry[1] != revision:
                raise Conflict(record.room)
            return Versioned(record, self._commit(record.room, data, record))

        return await self._call("update", record.room, record.state.value, apply)

    # -- the machinery -------------------------------------------------------------------------------

    async def _call(self, op: str, room: str, state: str | None, apply: Callable[[], T]) -> T:
        actor = ACTOR.get()
        key = (op, room)
        n = self._calls.get(key, 0)
        self._calls[key] = n + 1
        plan = self.faults.kv(Call("kv", op, room, actor, ACTIVITY.get(), state, None, n))
        what = f"kv.{op} {room}" + (f" [{state}]" if state else "")
        answer: asyncio.Future[T] = self.loop.create_future()
        world = self.world

        def reply(result: T | None, error: BaseException | None) -> None:
            if answer.done():
                return  # the caller is gone (crashed): the answer has no one to go to
            world.touched(actor)  # what the caller makes of it may change its reservations
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(result)  # type: ignore[arg-type]

        def at_server() -> None:
            if plan.outcome == "timeout_before":
                world.log(actor, f"{what}: FAULT timeout, not applied")
                reply(None, TimeoutError(f"KV {op} timed out"))
                return
            try:
                result: T | None = apply()
                error: BaseException | None = None
            except Conflict as exc:
                result, error = None, exc
            if plan.outcome == "timeout_after":
                world.log(actor, f"{what}: FAULT applied, answer lost ({_outcome(result, error)})")
                world.later(plan.answer, lambda: reply(None, TimeoutError(f"KV {op} timed out")))
            else:
                if op != "get":
                    world.log(actor, f"{what}: {_outcome(result, error)}")
                world.later(plan.answer, lambda: reply(result, error))

        world.later(plan.delay, at_server)
        try:
            return await answer
        except TimeoutError:
            world.checks.on_call_failed(room)
            raise

    def _commit(self, room: str, data: bytes, record: RoomRecord) -> int:
        self._seq += 1
        self._data[room] = (data, self._seq)
        self.world.checks.on_commit(self._states.get(room), record)
        self._states[room] = record
        for watch in self._watches.get(self.partition(room), ()):
            watch.feed.push((room, data, self._seq))
        return self._seq

    def partition(self, room: str) -> int:
        partition = self._partitions.get(room)
        if partition is None:
            partition = self._partitions[room] = partition_of(room)
        return partition

    # -- the watch (orchestrator.store.RoomStore.watch, of one partition) ---------------------------

    def watch(
        self,
        held: Callable[[str], int | None] | None = None,
        partition: int | None = None,
        applied: Callable[[int], None] | None = None,
        skip_at_rest: bool = False,
    ) -> AsyncGenerator[tuple[str, Versioned | None] | None, None]:
        """As the real store's: the partition's records now (last per key, in revision order),
        then ``None``, then every commit to it, in commit order, each after a seeded lag. A put
        the reader already ``held`` at that revision or newer is skipped unparsed, and with
        ``skip_at_rest`` a record at rest (``orchestrator.store.at_rest``) comes as (room, None);
        ``applied`` is told every revision once the reader has taken it."""
        assert partition is not None, "the replicas watch one partition each"
        return self._watch(held, partition, applied or (lambda _revision: None), skip_at_rest)

    async def _watch(
        self,
        held: Callable[[str], int | None] | None,
        partition: int,
        taken: Callable[[int], None],
        skip_at_rest: bool,
    ) -> AsyncGenerator[tuple[str, Versioned | None] | None, None]:
        world = self.world
        faults = self.faults
        if faults.kv_down and not faults.healed:
            # The watch is a JetStream consumer: creating it is a request like any other.
            await asyncio.sleep(KV_TIMEOUT_S)
            raise TimeoutError("KV watch timed out")
        actor = ACTOR.get()
        watch = PartitionWatch(actor, Feed(world, faults.watch_lag, counted=True, on_arrival=actor))
        # The server reads the partition when the watch starts; what it reads arrives after the
        # watch's lag, as every change after it.
        snapshot = sorted(
            (rev, room, data) for room, (data, rev) in self._data.items() if self.partition(room) == partition
        )
        watch.feed.push(*((room, data, rev) for rev, room, data in snapshot), None)
        self._watches.setdefault(partition, []).append(watch)
        try:
            while True:
                item = await watch.feed.get()
                if item is None:
                    yield None
                    continue
                room, data, revision = item
                if held is None or (have := held(room)) is None or have < revision:
                    if skip_at_rest and at_rest(data):
                        yield room, None
                    else:
                        yield room, Versioned(RoomRecord.model_validate_json(data), revision)
                # The reader asks for the next change only once it has taken this one.
                taken(revision)
        finally:
            watch.feed.stopped = True
            watches = self._watches.get(partition)
            if watches is not None and watch in watches:
                watches.remove(watch)

    def unwatch(self, replica: str) -> None:
        """A crashed replica's watches deliver nothing more (its tasks are being cancelled)."""
        for watches in self._watches.values():
            for watch in watches:
                if watch.actor == replica:
                    watch.feed.stopped = True

    # -- ground truth for the checks ----------------------------------------------------------------

    def peek(self, room: str) -> RoomRecord | None:
        """The record as last written (the object, not re-parsed: the checks only read it)."""
        return self._states.get(room)

    def rooms(self) -> list[str]:
        return list(self._data)

    def revision(self, room: str) -> int | None:
        entry = self._data.get(room)
        return entry[1] if entry is not None else None


def _stored(record: RoomRecord) -> RoomRecord:
    """What the real store writes to the rooms bucket (and answers): an ended room's compact form,
    its history from its end on (its full form goes to the archive bucket, not simulated)."""
    return record.compacted() if record.terminal else record


def _outcome(result: object, error: BaseException | None) -> str:
    if error is not None:
        return f"{type(error).__name__}"
    if isinstance(result, Versioned):
        return f"rev {result.revision}"
    return "exists" if result is None else str(result)


class Feed(Generic[T]):
    """One subscriber's ordered stream (a watch, a NATS subscription): each item arrives after a
    lag, at non-decreasing times (each timer pops the head, so equal due times cannot reorder
    them), then waits for the reader. ``counted``: pending in the world until it arrives;
    ``on_arrival``: the replica told (``World.touched``) when something arrives for it."""

    def __init__(
        self, world: World, lag: Callable[[], float], counted: bool = False, on_arrival: str | None = None
    ) -> None:
        self.world = world
        self.lag = lag
        self.counted = counted
        self.on_arrival = on_arrival
        self.stopped = False
        self._queue: deque[list[T]] = deque()
        self._ready: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._last_due = 0.0

    def push(self, *items: T) -> None:
        """``items`` arrive together (a watch's first reading), after one lag."""
        loop = self.world.loop
        due = max(loop.time() + self.lag(), self._last_due)
        self._last_due = due
        self._queue.append(list(items))
        if self.counted:
            self.world.pending += 1
        loop.call_at(due, self._pop)

    def _pop(self) -> None:
        if self.counted:
            self.world.pending -= 1
        items = self._queue.popleft()
        if self.stopped or self.world.stopped:
            return
        self._ready.extend(items)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self.on_arrival is not None:
            self.world.touched(self.on_arrival)

    async def get(self) -> T:
        while not self._ready:
            self._waiter = self.world.loop.create_future()
            await self._waiter
        return self._ready.popleft()


class PartitionWatch:
    """One open watch of one partition: whose it is, its feed of (room, data, revision) or None
    (the snapshot is complete)."""

    def __init__(self, actor: str, feed: Feed[tuple[str, bytes, int] | None]) -> None:
        self.actor = actor
        self.feed = feed


class ResyncBucket:
    """KV bucket ``switchboard_resync``: its one key, the last pass of any replica
    (``orchestrator.room.resync.PassLog``). A call is one round trip applied at the server (the
    real log's read and compare-and-set collapsed into one step); it times out as the room
    bucket's calls do (an outage, ``kv_timeout_before``), with a random stream of its own."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.value: dict[str, Any] = {}
        self.passes: dict[str, int] = {}  # per replica: passes that listed LiveKit's rooms

    def pass_log(self, replica: str) -> SimPassLog:
        return SimPassLog(self, replica)

    async def call(self, apply: Callable[[], T]) -> T:
        faults = self.world.faults
        if not faults.healed and (faults.kv_down or self.rng.random() < faults.mix.kv_timeout_before):
            await asyncio.sleep(KV_TIMEOUT_S)
            raise TimeoutError("KV switchboard_resync timed out")
        await asyncio.sleep(self.rng.uniform(0.0005, 0.003))
        result = apply()
        await asyncio.sleep(self.rng.uniform(0.0005, 0.003))
        return result


class SimPassLog(PassLog):
    """:class:`orchestrator.room.resync.PassLog` on the :class:`ResyncBucket`: each replica writes
    its passes over its own partitions there (the settle counts every replica's)."""

    def __init__(self, bucket: ResyncBucket, replica: str) -> None:  # no NATS KV
        self.bucket = bucket
        self.replica = replica

    async def record(self, report: PassReport) -> None:
        def apply() -> None:
            value = self.bucket.value
            found_total = int(value.get("found_total") or 0) + report.found
            value.update(asdict(report), owner=self.replica, found_total=found_total)
            if report.error is None:
                self.bucket.passes[self.replica] = self.bucket.passes.get(self.replica, 0) + 1

        await self.bucket.call(apply)
