"""The JetStream KV bucket of room records, simulated: get / create / compare-and-set update, and
one ordered watch stream per replica.

A call reaches the "server" after a seeded delay, is applied there (the compare-and-set decided at
that instant), and its answer travels back after another. Both legs are scheduled on the loop, not
awaited by the caller: a caller cancelled mid-call (a crashed replica) still has its write land,
as a request already on the wire does. Faults: a timeout before the write was applied, a timeout
*after* it was applied (the ambiguous one), an outage (every call times out).

Records are stored as the JSON the real store writes (``model_dump_json``) and parsed on every read
and every watch delivery, so the serialisation the rewrite may change is exercised too.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.index import RoomIndex
from orchestrator.records import RoomRecord
from orchestrator.room.resync import PassReport, ResyncLease
from orchestrator.store import Conflict, Versioned
from tests.sim.config import KV_TIMEOUT_S, RESYNC_HOLD_S
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
        self._feeds: dict[str, WatchFeed] = {}

    # -- the RoomStore surface ---------------------------------------------------------------------

    async def get(self, room: str) -> Versioned | None:
        def apply() -> Versioned | None:
            entry = self._data.get(room)
            if entry is None:
                return None
            return Versioned(RoomRecord.model_validate_json(entry[0]), entry[1])

        return await self._call("get", room, None, apply)

    async def create(self, record: RoomRecord) -> Versioned | None:
        data = record.model_dump_json().encode()

        def apply() -> Versioned | None:
            if record.room in self._data:
                return None
            return Versioned(record, self._commit(record.room, data, record))

        return await self._call("create", record.room, record.state.value, apply)

    async def update(self, record: RoomRecord, revision: int) -> Versioned:
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
        for feed in self._feeds.values():
            feed.push(room, data, self._seq)
        return self._seq

    # -- the watch -------------------------------------------------------------------------------

    def watch(self, replica: str, index: RoomIndex) -> WatchFeed:
        """Feed ``index``: every record now (at once: the service sweeps only once synced), then
        every commit, in commit order, each after a seeded lag."""
        for room, (data, rev) in self._data.items():
            index.apply(room, Versioned(RoomRecord.model_validate_json(data), rev))
        feed = WatchFeed(self.world, index)
        self._feeds[replica] = feed
        return feed

    def unwatch(self, replica: str) -> None:
        feed = self._feeds.pop(replica, None)
        if feed is not None:
            feed.stopped = True

    # -- ground truth for the checks ----------------------------------------------------------------

    def peek(self, room: str) -> RoomRecord | None:
        """The record as last written (the object, not re-parsed: the checks only read it)."""
        return self._states.get(room)

    def rooms(self) -> list[str]:
        return list(self._data)


def _outcome(result: object, error: BaseException | None) -> str:
    if error is not None:
        return f"{type(error).__name__}"
    if isinstance(result, Versioned):
        return f"rev {result.revision}"
    return "exists" if result is None else str(result)


class WatchFeed:
    """One replica's ordered stream of changes. Deliveries are due at non-decreasing times and each
    timer pops the head, so equal due times cannot reorder them."""

    def __init__(self, world: World, index: RoomIndex) -> None:
        self.world = world
        self.index = index
        self.stopped = False
        self._queue: deque[tuple[str, bytes, int]] = deque()
        self._last_due = 0.0

    def push(self, room: str, data: bytes, revision: int) -> None:
        loop = self.world.loop
        due = max(loop.time() + self.world.faults.watch_lag(), self._last_due)
        self._last_due = due
        self._queue.append((room, data, revision))
        self.world.pending += 1
        loop.call_at(due, self._pop)

    def _pop(self) -> None:
        self.world.pending -= 1
        room, data, revision = self._queue.popleft()
        if not self.stopped:
            self.index.apply(room, Versioned(RoomRecord.model_validate_json(data), revision))


class ResyncBucket:
    """KV bucket ``switchboard_resync``: its one key, the resync lease (owner, until) and the last
    pass. A call is one round trip applied at the server (the real lease's read and
    compare-and-set collapsed into one step); it times out as the room bucket's calls do (an
    outage, ``kv_timeout_before``), with a random stream of its own."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.value: dict[str, Any] = {}
        self.passes = 0  # passes that listed LiveKit's rooms (the settle waits for some)

    def lease(self, replica: str) -> SimResyncLease:
        return SimResyncLease(self, replica, RESYNC_HOLD_S)

    async def call(self, apply: Callable[[], T]) -> T:
        faults = self.world.faults
        if not faults.healed and (faults.kv_down or self.rng.random() < faults.mix.kv_timeout_before):
            await asyncio.sleep(KV_TIMEOUT_S)
            raise TimeoutError("KV switchboard_resync timed out")
        await asyncio.sleep(self.rng.uniform(0.0005, 0.003))
        result = apply()
        await asyncio.sleep(self.rng.uniform(0.0005, 0.003))
        return result


class SimResyncLease(ResyncLease):
    """:class:`orchestrator.room.resync.ResyncLease` on the :class:`ResyncBucket`: taken when free
    or expired, renewed by its holder every pass; a crashed holder's lease runs out after
    ``RESYNC_HOLD_S`` (a restarted replica has a new name)."""

    def __init__(self, bucket: ResyncBucket, replica: str, hold_s: float) -> None:  # no NATS KV
        self.bucket = bucket
        self.replica = replica
        self.hold_s = hold_s
        self.wall = bucket.world.wall

    async def acquire(self) -> bool:
        def apply() -> bool:
            value = self.bucket.value
            now = self.wall()
            owner = value.get("owner")
            if owner not in (None, self.replica) and float(value.get("until") or 0.0) > now:
                return False
            if owner != self.replica:
                self.bucket.world.log(self.replica, f"takes the resync lease (from {owner or 'nobody'})")
            value.update(owner=self.replica, until=now + self.hold_s)
            return True

        return await self.bucket.call(apply)

    async def record(self, report: PassReport) -> None:
        def apply() -> None:
            if self.bucket.value.get("owner") == self.replica:
                self.bucket.value.update(asdict(report))
            if report.error is None:
                self.bucket.passes += 1

        await self.bucket.call(apply)
