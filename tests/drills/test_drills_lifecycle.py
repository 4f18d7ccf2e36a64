"""Drill 8: the room lifecycle against the real stack (issue 14) — lost webhooks, out-of-order and
reused rooms, rooms deleted under a dispatch, a long LiveKit API outage. Definitions:
tests/drills/harness.py.

- 8.1 lost ``room_started``: the ingest is stopped and the rooms' ``room_started`` webhooks are
  lost while rooms are created in LiveKit; the anti-entropy resync must find every one of them.
- 8.2 lost ``room_finished``: the webhooks of deleted rooms are dropped between LiveKit and the
  ingest (and, for half of them, the workers' ``left`` reports too: their pools are frozen); every
  record must end (``room_gone``) and the pools' headroom come back.
- 8.3 lifecycle edges: ended before created, a room name reused three times (with sids through the
  real webhook path, and sid-less events published directly), a room deleted while its
  CreateDispatch is in flight (the request held before LiveKit sees it, and its answer held after).
- 8.4 LiveKit's API down (refused, then unanswered) during a burst: rooms wait, none fails, all go
  live after it returns.

Each runs in a small variant (the default test run) and a full one (``-m drill``, ``make drills``,
figures in docs/drills/REPORT.md). Everything runs on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from livekit import api as lkapi
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.ops.census import ask_orchestrators
from orchestrator.records import RoomRecord, RoomState
from shared import bus, subjects
from shared.codec import decode
from shared.messages import RoomCreated, RoomEnded
from tests.drills.faultproxy import FaultProxy
from tests.drills.harness import (
    LIVE,
    DrillResult,
    Stack,
    drill_config,
    listeners,
    live_at,
    save_result,
    stack,
)
from tests.drills.webhook_relay import ApiGate, Relayed, WebhookRelay
from tests.workerkit import SWITCHBOARD

pytestmark = pytest.mark.integration

# The resync as the drills run it (the defaults, spelled out: the bounds below are built on them).
RESYNC_S = 5.0
GRACE_S = 3.0
# Rooms the drills create themselves stay this long without a participant, or with agents only
# (LiveKit's defaults are 5 minutes and 20 s; the full API outage alone lasts 2 minutes).
EMPTY_TIMEOUT_S = 900
POOLS = ("eu-central-a", "eu-central-b")


@dataclass(frozen=True)
class Size:
    name: str
    lost_started: int  # 8.1: rooms whose room_started is lost
    lost_finished: int  # 8.2: speaking rooms deleted with their room_finished lost
    edge_rooms: int  # 8.3: rooms per edge (ended-before-created, deleted in flight) and reused names
    outage_s: float  # 8.4: how long LiveKit's API is down (refused the first half, unanswered the rest)
    burst: int  # 8.4: rooms arriving while it is down
    listeners: int  # 8.4: rooms with a listener, which must reach speaking
    listen_batch: int  # 8.2: listeners in the rooms at once (each until its room is speaking)
    processes: int  # worker processes per pool
    capacity: int  # jobs per worker process
    executor: str
    join_s: float  # how long a burst of this size may take to join, on 2 cores
    timeout_s: float  # the test's own bound


FAST = Size(
    "fast",
    lost_started=5,
    lost_finished=3,
    edge_rooms=1,
    outage_s=20,
    burst=10,
    listeners=1,
    listen_batch=3,
    processes=1,
    capacity=10,
    executor="process",
    join_s=60,
    timeout_s=300,
)
FULL = Size(
    "full",
    lost_started=50,
    lost_finished=20,
    edge_rooms=3,
    outage_s=120,
    burst=100,
    listeners=3,
    listen_batch=4,
    processes=1,
    capacity=60,
    executor="thread",
    join_s=150,
    timeout_s=900,
)


def sizes() -> list[Any]:
    return [
        pytest.param(FAST, id="fast", marks=[pytest.mark.timeout(FAST.timeout_s)]),
        pytest.param(FULL, id="full", marks=[pytest.mark.drill, pytest.mark.timeout(FULL.timeout_s)]),
    ]


# ----------------------------------------------------------------------------------------------
# observers
# ----------------------------------------------------------------------------------------------


class RecordLog:
    """Every version of every room record, from the bucket's watch, for the whole drill: the states
    a room went through (``waiting_for_livekit`` during an outage, never ``failed``), the
    incarnations of a reused name, and an awaitable condition on them."""

    def __init__(self, s: Stack) -> None:
        assert s.kv is not None
        self.kv = s.kv
        self.versions: dict[str, list[RoomRecord]] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def latest(self, room: str) -> RoomRecord | None:
        got = self.versions.get(room)
        return got[-1] if got else None

    def records(self, rooms: Iterable[str]) -> dict[str, RoomRecord | None]:
        return {r: self.latest(r) for r in rooms}

    def states_seen(self, room: str) -> set[RoomState]:
        return {v.state for v in self.versions.get(room, [])}

    def of_sid(self, room: str, sid: str | None) -> list[RoomRecord]:
        return [v for v in self.versions.get(room, []) if v.sid == sid]

    async def wait(self, done: Callable[[], bool], within_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(within_s), self._changed:
                await self._changed.wait_for(done)
        except TimeoutError:
            raise AssertionError(f"{what}: not within {within_s:.0f}s") from None

    async def wait_rooms(
        self, rooms: Iterable[str], ok: Callable[[RoomRecord], bool], within_s: float, what: str
    ) -> dict[str, RoomRecord | None]:
        wanted = list(rooms)

        def done() -> bool:
            return all((rec := self.latest(r)) is not None and ok(rec) for r in wanted)

        try:
            await self.wait(done, within_s, what)
        except AssertionError as err:
            pending = {
                r: _timeline(self.latest(r))
                for r in wanted
                if not ((rec := self.latest(r)) is not None and ok(rec))
            }
            raise AssertionError(
                f"{err}; pending {len(pending)}: {dict(list(pending.items())[:5])}"
            ) from None
        return self.records(wanted)

    async def __aenter__(self) -> RecordLog:
        self._task = asyncio.create_task(self._run(), name="record-log")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            watcher = None
            try:
                watcher = await self.kv.watchall()
                while True:
                    try:
                        entry = await watcher.updates(timeout=5.0)  # type: ignore[no-untyped-call]
                    except TimeoutError:
                        continue
                    if entry is None or not entry.value:
                        continue  # the end of the initial values, or a delete/expiry
                    try:
                        rec = RoomRecord.model_validate_json(entry.value)
                    except ValueError:
                        continue
                    async with self._changed:
                        self.versions.setdefault(rec.room, []).append(rec)
                        self._changed.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the watch broke: a new one, after a breath (bounded by the test)
                print(f"record log: watch lost ({err!r}); watching again")
                await asyncio.sleep(0.5)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]


@dataclass
class Published:
    """Room events published on NATS during the drill (a core subscription sees every JetStream
    publish without consuming from the work-queue stream)."""

    created: list[RoomCreated] = field(default_factory=list)
    ended: list[RoomEnded] = field(default_factory=list)

    def created_for(self, rooms: Iterable[str]) -> list[RoomCreated]:
        names = set(rooms)
        return [e for e in self.created if e.room in names]


@contextlib.asynccontextmanager
async def published(s: Stack) -> AsyncIterator[Published]:
    assert s.nc is not None
    seen = Published()

    async def on_created(msg: Msg) -> None:
        with contextlib.suppress(Exception):
            seen.created.append(decode(RoomCreated, msg.data))

    async def on_ended(msg: Msg) -> None:
        with contextlib.suppress(Exception):
            seen.ended.append(decode(RoomEnded, msg.data))

    subs = [
        await s.nc.subscribe(subjects.ROOM_CREATED, cb=on_created),
        await s.nc.subscribe(subjects.ROOM_ENDED, cb=on_ended),
    ]
    try:
        yield seen
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def resync_pass(s: Stack) -> dict[str, Any] | None:
    """The last resync pass as the KV says (``switchboard_resync``/``pass``); None before the first."""
    assert s.js is not None
    try:
        kv = await s.js.key_value(subjects.RESYNC_BUCKET)
        entry = await kv.get(subjects.RESYNC_KEY)
    except Exception:
        return None
    if not entry.value:
        return None
    value = json.loads(entry.value)
    return value if isinstance(value, dict) else None


async def pool_figures(s: Stack) -> dict[str, dict[str, int]]:
    """Per pool: capacity and active as an orchestrator replica judges them (its census), and the
    reserved slots and headroom its /metrics export."""
    assert s.nc is not None
    answered = await ask_orchestrators(s.nc, timeout_s=2.0)
    figures: dict[str, dict[str, int]] = {}
    if answered is not None:
        for view in answered[1]:
            figures[view.pool] = {"capacity": view.capacity, "active": view.active}
    orch = next((o for o in s.orchestrators if o.process.running), None)
    if orch is not None:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(f"http://127.0.0.1:{orch.http_port}/metrics") as resp,
        ):
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for kind in ("reserved", "headroom"):
                if family.name.endswith(f"pool_{kind}"):
                    for sample in family.samples:
                        pool = sample.labels.get("switchboard_pool")
                        if pool:
                            figures.setdefault(pool, {})[kind] = int(sample.value)
    return figures


async def wait_until(check: Callable[[], Any], within_s: float, what: str, every_s: float = 0.5) -> Any:
    """Poll an async ``check`` until it returns something truthy (LiveKit's lists and the pool
    census announce nothing to an outside client), within ``within_s``."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"{what}: not within {within_s:.0f}s (last: {last!r})")


async def create_room(s: Stack, name: str, metadata: str = "") -> lkapi.Room:
    assert s.lk is not None
    async with asyncio.timeout(10):
        return await s.lk.room.create_room(
            lkapi.CreateRoomRequest(
                name=name,
                empty_timeout=EMPTY_TIMEOUT_S,
                departure_timeout=EMPTY_TIMEOUT_S,
                metadata=metadata,
            )
        )


async def delete_room(s: Stack, name: str) -> None:
    assert s.lk is not None
    async with asyncio.timeout(10):
        await s.lk.room.delete_room(lkapi.DeleteRoomRequest(room=name))


async def listed(s: Stack, names: Iterable[str] | None = None) -> dict[str, lkapi.Room]:
    assert s.lk is not None
    async with asyncio.timeout(10):
        rooms = await s.lk.room.list_rooms(lkapi.ListRoomsRequest(names=list(names or [])))
    return {r.name: r for r in rooms.rooms}


def created_at(room: lkapi.Room) -> datetime:
    ms = room.creation_time_ms or room.creation_time * 1000
    return datetime.fromtimestamp(ms / 1000, UTC)


async def publish_created(s: Stack, event: RoomCreated) -> None:
    assert s.js is not None
    async with asyncio.timeout(15):
        await bus.publish_room_created(s.js, event)


async def publish_ended(s: Stack, event: RoomEnded) -> int:
    """Returns the stream sequence JetStream acked (a duplicate's is the original's)."""
    assert s.js is not None
    async with asyncio.timeout(15):
        return await bus.publish_room_ended(s.js, event)


async def events_handled(s: Stack, within_s: float) -> None:
    """Until the orchestrators' consumer of the room events has nothing pending or unacked."""
    assert s.js is not None
    js = s.js

    async def idle() -> bool:
        info = await js.consumer_info(subjects.ROOMS_STREAM, subjects.ORCHESTRATOR_CONSUMER)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await wait_until(idle, within_s, "the room events consumed and acked", every_s=0.2)


async def start_pools(s: Stack, size: Size) -> None:
    await asyncio.gather(
        *(
            s.start_pool(
                pool,
                "eu-central",
                processes=size.processes,
                capacity=size.capacity,
                executor=size.executor,
            )
            for pool in POOLS
        )
    )


def _timeline(rec: RoomRecord | None) -> str:
    if rec is None:
        return "no record"
    start = rec.history[0].at if rec.history else rec.received_at
    lines = [f"{h.at - start:+.1f}s {h.event} {h.state.value} {h.detail}"[:160] for h in rec.history[-12:]]
    return f"[{rec.state.value} sid={rec.sid} reason={rec.reason} origin={rec.origin}] " + " | ".join(lines)


def _events(rec: RoomRecord | None) -> list[str]:
    return [h.event for h in rec.history] if rec else []


def _is_live(rec: RoomRecord) -> bool:
    return rec.state in LIVE


def _dropped(event: str, rooms: set[str]) -> Callable[[list[Relayed]], bool]:
    """The relay has dropped ``event`` for every one of ``rooms``."""
    return lambda seen: {r.room for r in seen if r.event == event and r.outcome == "dropped"} >= rooms


def _forwarded(event: str, room: str) -> Callable[[list[Relayed]], bool]:
    """The relay has passed ``event`` of ``room`` to the ingest (whatever it answered)."""
    return lambda seen: any(
        r.event == event and r.room == room and r.outcome.startswith("forwarded") for r in seen
    )


def _dropped_rooms(relay: WebhookRelay, event: str, rooms: set[str]) -> set[str]:
    return {r.room for r in relay.seen if r.event == event and r.outcome == "dropped" and r.room in rooms}


def _drop_event(event: str, rooms: set[str]) -> Callable[[str | None, str | None], bool]:
    return lambda ev, room: ev == event and room in rooms


def _method_for(method: str, room: str) -> Callable[[str, str | None], bool]:
    return lambda m, r: m == method and r == room


def _live_with_sid(sid: str) -> Callable[[RoomRecord], bool]:
    return lambda rec: rec.sid == sid and rec.state in LIVE


def _live_created_at(at: datetime) -> Callable[[RoomRecord], bool]:
    """Live, and the incarnation whose event said it was created at ``at``."""
    return lambda rec: (
        rec.state in LIVE and rec.event_at is not None and abs(rec.event_at - at.timestamp()) < 0.01
    )


# ----------------------------------------------------------------------------------------------
# 8.1 lost room_started
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sizes())
async def test_drill_8_1_lost_room_started(size: Size, tmp_path: Any) -> None:
    result = DrillResult("8.1 lost room_started (ingest stopped, webhooks lost): resync", size.name)
    started = time.monotonic()
    rooms = [f"ornina-l1-{i}" for i in range(size.lost_started)]
    drilled = set(rooms)
    control = "ornina-l1-control"
    config = drill_config(resync_interval_s=RESYNC_S, resync_grace_s=GRACE_S)
    bound = RESYNC_S + GRACE_S + size.join_s  # creation -> one live agent, per room
    async with WebhookRelay() as relay, stack(tmp_path, config, webhook_urls=[relay.url]) as s:
        await start_pools(s, size)
        await s.start_orchestrators(2)  # two replicas: the lease lets one of them resync per pass
        relay.target = await s.start_ingest()
        async with RecordLog(s) as log, published(s) as events:
            # The drilled rooms' room_started is lost for good (LiveKit's retries after the ingest
            # is back too, as when its notifier drops an event older than 30 s); and the ingest
            # itself is down while the rooms are created.
            relay.drop(lambda event, room: event == "room_started" and room in drilled)
            assert s.ingest is not None
            await asyncio.to_thread(s.ingest.stop, 10.0)
            made: dict[str, lkapi.Room] = {}
            for room in rooms:
                made[room] = await create_room(s, room)
            await relay.wait_for(
                lambda seen: (
                    {r.room for r in seen if r.event == "room_started" and r.outcome == "dropped"} >= drilled
                ),
                30,
                "LiveKit's room_started for every drilled room, dropped at the relay",
            )
            relay.target = await s.start_ingest()  # the ingest is back
            # A room created now goes the ordinary way: its event is published (the check below
            # sees publishes) and the resync leaves it to that event.
            made[control] = await create_room(s, control)
            records = await log.wait_rooms(
                [*rooms, control], _is_live, bound + 30, "every room live with its agent"
            )
            counts = {r: await s.agents(r) for r in [*rooms, control]}
            last_pass = await resync_pass(s)
            await s.finish(result, [*rooms, control], records)
        stream = await _rooms_stream_messages(s)
    per_room = {
        r: round(t - made[r].creation_time_ms / 1000, 2)
        for r in rooms
        if (t := live_at(records[r])) is not None
    }
    result.recovery_s = list(per_room.values())
    result.extra.update(
        {
            "rooms_lost_webhooks": len(rooms),
            "rooms_whose_room_started_was_dropped": len(_dropped_rooms(relay, "room_started", drilled)),
            "room_started_dropped_at_relay": relay.outcomes("room_started", drilled).get("dropped", 0),
            "created_events_published_for_them": len(events.created_for(rooms)),
            "created_events_published_for_control": len(events.created_for([control])),
            "origins": dict(Counter(rec.origin for r in rooms if (rec := records[r]) is not None)),
            "control_origin": ctl.origin if (ctl := records[control]) else None,
            "bound_s": bound,
            "rooms_stream_messages": stream,
            "last_resync_pass": last_pass,
        }
    )
    result.notes.append(
        "recovery: LiveKit's creation time of the room -> its agent joined (the resync found it); "
        f"bound: resync {RESYNC_S:g} s + grace {GRACE_S:g} s + join {size.join_s:g} s"
    )
    result.duration_s = time.monotonic() - started
    save_result(result)
    summary = result.summary()
    # LiveKit did send them, and they were lost: nothing about the drilled rooms reached NATS.
    assert result.extra["rooms_whose_room_started_was_dropped"] == len(rooms), summary
    assert not events.created_for(rooms), f"room events were published for lost rooms: {summary}"
    assert events.created_for([control]), f"the control room's event was never seen published: {summary}"
    # The stream stored nothing but the control room's event during the whole drill.
    assert stream == 1, f"the room events stream stored {stream} messages: {summary}"
    for room in rooms:
        rec = records[room]
        assert rec is not None and rec.state in LIVE, _timeline(rec)
        assert rec.origin == "resync", _timeline(rec)
        assert "reconciled" in _events(rec), _timeline(rec)
        assert rec.sid == made[room].sid, _timeline(rec)
        agents = counts[room]
        assert len(agents) == 1, f"{room}: {len(agents)} agents {[a.identity for a in agents]}"
        assert agents[0].identity == rec.identity, f"{room}: agent {agents[0].identity}, {_timeline(rec)}"
        assert per_room[room] <= bound, f"{room}: live {per_room[room]}s after creation > {bound}s"
    assert last_pass is not None and int(last_pass.get("found_total") or 0) >= len(rooms), (
        f"the resync's own count of rooms found: {last_pass}"
    )
    ctl = records[control]
    assert ctl is not None and ctl.origin == "event" and "reconciled" not in _events(ctl), _timeline(ctl)
    assert len(counts[control]) == 1, counts[control]
    assert result.double_agents == 0 and result.lost == 0, summary
    assert result.samples > 0, summary
    assert not result.extra.get("secret_leaks"), summary


async def _rooms_stream_messages(s: Stack) -> int | None:
    """Messages the room events stream ever stored (its last sequence: a work queue deletes acked
    messages, the sequence counts them all)."""
    assert s.js is not None
    with contextlib.suppress(Exception):
        info = await s.js.stream_info(subjects.ROOMS_STREAM)
        return int(info.state.last_seq)
    return None


# ----------------------------------------------------------------------------------------------
# 8.2 lost room_finished
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sizes())
async def test_drill_8_2_lost_room_finished(size: Size, tmp_path: Any) -> None:
    result = DrillResult(
        "8.2 lost room_finished (and lost left reports): rooms end, headroom back", size.name
    )
    started = time.monotonic()
    rooms = [f"ornina-l2-{i}" for i in range(size.lost_finished)]
    drilled = set(rooms)
    # First the rooms whose workers still report `left` when their room goes, then the rooms whose
    # workers are frozen (SIGSTOP) meanwhile: only the resync can end those.
    half = max(1, len(rooms) // 3) if len(rooms) < 6 else len(rooms) // 2
    with_left, without_left = rooms[:half], rooms[half:]
    # A frozen pool must not be judged dead while the resync ends its rooms (that would be another
    # path to the same end): dead only after 60 missed beats.
    config = drill_config(resync_interval_s=RESYNC_S, resync_grace_s=GRACE_S, dead_after_missed_beats=60)
    end_bound = 3 * RESYNC_S + GRACE_S  # "within a few resync intervals"
    ended_after: dict[str, float] = {}
    async with WebhookRelay() as relay, stack(tmp_path, config, webhook_urls=[relay.url]) as s:
        await start_pools(s, size)
        await s.start_orchestrators(2)
        relay.target = await s.start_ingest()
        relay.drop(lambda event, room: event == "room_finished" and room in drilled)
        async with RecordLog(s) as log, published(s) as events:
            # The rooms are created (LiveKit's webhook -> the ingest -> an agent), then a listener
            # joins each and stays until the room is speaking: a few at a time, so that the test
            # process's rtc listeners are never starved on 2 cores (a connect of the livekit rtc
            # SDK that is not answered within 15 s panics and takes the whole process down). The
            # rooms outlive their listeners (a departure timeout longer than the drill: LiveKit
            # closes a room whose last non-agent participant left after it).
            for room in rooms:
                await create_room(s, room)
            for first in range(0, len(rooms), size.listen_batch):
                batch = rooms[first : first + size.listen_batch]
                async with listeners(s, batch):
                    await log.wait_rooms(
                        batch,
                        lambda rec: rec.state == RoomState.SPEAKING,
                        size.join_s,
                        f"rooms {batch} speaking",
                    )
            before = log.records(rooms)
            figures_before = await pool_figures(s)
            for phase, batch in (("left reported", with_left), ("left lost", without_left)):
                frozen = s.workers if phase == "left lost" else []
                try:
                    for w in frozen:
                        assert w.process is not None
                        w.process.signal(signal.SIGSTOP)
                    deleted_at = time.time()
                    for room in batch:
                        await delete_room(s, room)
                    await relay.wait_for(
                        _dropped("room_finished", set(batch)),
                        30,
                        f"{phase}: LiveKit's room_finished for the deleted rooms, dropped at the relay",
                    )
                    ended = await log.wait_rooms(
                        batch,
                        lambda rec: rec.terminal,
                        end_bound + 15,
                        f"{phase}: every deleted room's record ended",
                    )
                finally:
                    for w in frozen:
                        assert w.process is not None
                        w.process.signal(signal.SIGCONT)
                for room in batch:
                    rec = ended[room]
                    assert rec is not None
                    ended_after[room] = round(rec.history[-1].at - deleted_at, 2)
            after = log.records(rooms)

            # The pools' headroom comes back: no job left on them, nothing reserved, all headroom.
            async def headroom_back() -> dict[str, dict[str, int]] | None:
                figures = await pool_figures(s)
                ok = all(
                    f.get("active") == 0
                    and f.get("reserved", 0) == 0
                    and f.get("headroom") == f.get("capacity")
                    and f.get("capacity", 0) > 0
                    for pool, f in figures.items()
                    if pool in POOLS
                ) and all(pool in figures for pool in POOLS)
                return figures if ok else None

            figures_after = await wait_until(
                headroom_back, 30 + 5 * RESYNC_S, "the pools' headroom back (census and /metrics)"
            )
            await s.finish(result, rooms, after)
    result.rooms_sent = len(rooms)
    result.failed = sum(1 for r in rooms if (rec := after[r]) and rec.state == RoomState.FAILED)
    result.live_at_end = sum(1 for r in rooms if (rec := before[r]) and rec.state in LIVE)
    result.speaking_at_end = sum(1 for r in rooms if (rec := before[r]) and rec.state == RoomState.SPEAKING)
    result.listener_rooms = len(rooms)
    result.lost = sum(1 for r in rooms if not ((rec := after[r]) and rec.terminal and rec.reason))
    result.recovery_s = list(ended_after.values())
    result.extra.update(
        {
            "rooms_deleted": len(rooms),
            "with_left_report": len(with_left),
            "left_lost_pools_frozen": len(without_left),
            "room_finished_dropped_at_relay": len(_dropped_rooms(relay, "room_finished", drilled)),
            "ended_events_published_for_them": sum(1 for e in events.ended if e.room in drilled),
            "final": dict(
                Counter(f"{rec.state.value}/{rec.reason}" for r in rooms if (rec := after[r]) is not None)
            ),
            "ended_by": dict(
                Counter(f"{'/'.join(_events(rec)[-3:])}" for r in rooms if (rec := after[r]) is not None)
            ),
            "ended_after_delete_s": ended_after,
            "pools_before": figures_before,
            "pools_after": figures_after,
            "end_bound_s": end_bound,
        }
    )
    result.notes.append(
        f"live/speaking: before the deletion (each room's listener stayed until it was speaking, "
        f"{size.listen_batch} at a time); recovery: DeleteRoom -> the record ended; "
        "'left lost': every worker process SIGSTOPped from before the deletion until the records ended"
    )
    result.duration_s = time.monotonic() - started
    save_result(result)
    summary = result.summary()
    assert result.speaking_at_end == len(rooms), summary
    assert result.extra["room_finished_dropped_at_relay"] == len(rooms), summary
    assert result.extra["ended_events_published_for_them"] == 0, summary
    for room in rooms:
        rec = after[room]
        assert rec is not None and rec.state == RoomState.ENDED, _timeline(rec)
        assert rec.reason == "room_gone", _timeline(rec)
        assert ended_after[room] <= end_bound, (
            f"{room} ended {ended_after[room]}s after its deletion: {_timeline(rec)}"
        )
    assert result.double_agents == 0, summary
    assert not result.extra.get("secret_leaks"), summary


# ----------------------------------------------------------------------------------------------
# 8.3 lifecycle edges
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sizes())
async def test_drill_8_3_lifecycle_edges(size: Size, tmp_path: Any) -> None:
    result = DrillResult(
        "8.3 lifecycle edges: ended before created, name reuse x3, deleted while dispatching", size.name
    )
    started = time.monotonic()
    config = drill_config(resync_interval_s=RESYNC_S, resync_grace_s=GRACE_S)
    problems: list[str] = []
    all_rooms: list[str] = []
    async with WebhookRelay() as relay, stack(tmp_path, config, webhook_urls=[relay.url]) as s:
        assert s.livekit is not None
        await start_pools(s, size)
        async with ApiGate(s.livekit.http_url) as gate:
            await s.start_orchestrators(2, livekit_url=gate.url)
            relay.target = await s.start_ingest()
            async with RecordLog(s) as log, published(s) as events:
                edges: list[tuple[str, Callable[[], Any]]] = [
                    ("ended before created", lambda: _edge_ended_before_created(s, log, size, result)),
                    ("created, room never existed", lambda: _edge_never_existed(s, log, size, result)),
                    ("name reuse with sids", lambda: _edge_reuse_with_sid(s, log, relay, size, result)),
                    ("name reuse without sids", lambda: _edge_reuse_without_sid(s, log, relay, size, result)),
                    (
                        "deleted, CreateDispatch request in flight",
                        lambda: _edge_deleted_in_flight(s, log, gate, relay, size, result, answer=False),
                    ),
                    (
                        "deleted, CreateDispatch answer in flight",
                        lambda: _edge_deleted_in_flight(s, log, gate, relay, size, result, answer=True),
                    ),
                ]
                for name, run in edges:
                    began = time.monotonic()
                    try:
                        rooms = await run()
                        all_rooms += rooms
                        result.extra[f"{name}: s"] = round(time.monotonic() - began, 1)
                    except AssertionError as err:
                        problems.append(f"{name}: {err}")
                        result.extra[f"{name}: FAILED"] = str(err)[:600]
                records = log.records(all_rooms)
                await s.finish(result, all_rooms, records)
                result.extra["created_events_published"] = len(events.created)
    result.rooms_sent = len(all_rooms)
    result.failed = sum(1 for rec in records.values() if rec is not None and rec.state == RoomState.FAILED)
    result.notes.append(
        "each edge's own checks are listed above; live/failed/lost count the rooms at the end "
        "(ended is the expected end of most edges)"
    )
    result.duration_s = time.monotonic() - started
    save_result(result)
    assert not problems, "\n".join(problems)
    assert result.double_agents == 0, result.summary()
    assert result.samples > 0, result.summary()
    assert not result.extra.get("secret_leaks"), result.summary()


async def _never_listed(
    s: Stack, rooms: list[str], until: Callable[[], Awaitable[bool]], within_s: float
) -> set[str]:
    """Poll LiveKit's room list until ``until()`` is true; returns which of ``rooms`` it ever listed."""
    seen: set[str] = set()
    deadline = time.monotonic() + within_s
    while True:
        seen |= set(await listed(s, rooms))
        if await until():
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the condition never held within {within_s:.0f}s (listed meanwhile: {seen})"
            )
        await asyncio.sleep(0.25)


async def _edge_ended_before_created(s: Stack, log: RecordLog, size: Size, result: DrillResult) -> list[str]:
    """rooms.ended then rooms.created for one sid of a room LiveKit does not have. In order (the end
    handled before the start is published): the end leaves a tombstone and the start is a duplicate
    (no placement at all). Back to back (either may be handled first): no CreateDispatch either.
    Either way LiveKit never lists the room (CreateDispatch would have created it)."""
    ordered = [f"ornina-l3-late-{i}" for i in range(size.edge_rooms)]
    racing = [f"ornina-l3-race-{i}" for i in range(size.edge_rooms)]
    rooms = ordered + racing
    since = time.time()
    sids = {room: f"RM_l3x{n}x{int(since)}" for n, room in enumerate(rooms)}

    def created(room: str) -> RoomCreated:
        return RoomCreated(room=room, sid=sids[room], region="eu-central", created_at=datetime.now(UTC))

    for room in ordered:
        await publish_ended(s, RoomEnded(room=room, sid=sids[room]))
    await events_handled(s, 30)
    await log.wait_rooms(
        ordered, lambda rec: rec.terminal, 10, "a tombstone for each room ended before its start"
    )
    for room in ordered:
        await publish_created(s, created(room))
    for room in racing:
        await publish_ended(s, RoomEnded(room=room, sid=sids[room]))
        await publish_created(s, created(room))
    await events_handled(s, 30)

    async def settled() -> bool:
        # Every record terminal, and two resync passes since (a pass may not revive them either).
        recs = log.records(rooms)
        if not all(rec is not None and rec.terminal for rec in recs.values()):
            return False
        pass_ = await resync_pass(s)
        return pass_ is not None and float(pass_.get("at") or 0) > since + 2 * RESYNC_S

    seen = await _never_listed(s, rooms, settled, 60)
    assert not seen, f"LiveKit listed rooms that never existed (created by a dispatch?): {sorted(seen)}"
    for room in rooms:
        rec = log.latest(room)
        assert rec is not None and rec.state == RoomState.ENDED, _timeline(rec)
        assert rec.dispatch_id is None, f"dispatched anyway: {_timeline(rec)}"
        assert not any(v.state in (RoomState.DISPATCHED, *LIVE) for v in log.versions[room]), _timeline(rec)
    for room in ordered:  # the tombstone made the late start a duplicate
        rec = log.latest(room)
        assert rec is not None and rec.attempt == 0 and "decision" not in _events(rec), (
            f"a late start after the tombstone was placed: {_timeline(rec)}"
        )
        assert not any(v.state == RoomState.DISPATCHING for v in log.versions[room]), _timeline(rec)
    result.extra["ended before created"] = {
        "in order (tombstone)": {r: _events(log.latest(r)) for r in ordered},
        "back to back": {r: _events(log.latest(r)) for r in racing},
    }
    return rooms


async def _edge_never_existed(s: Stack, log: RecordLog, size: Size, result: DrillResult) -> list[str]:
    """rooms.created (with a sid) for a room LiveKit does not have: the check before CreateDispatch
    ends it (room_gone), and LiveKit never lists it."""
    rooms = [f"ornina-l3-none-{i}" for i in range(size.edge_rooms)]
    since = time.time()
    for n, room in enumerate(rooms):
        await publish_created(
            s,
            RoomCreated(
                room=room, sid=f"RM_l3none{n}x{int(since)}", region="eu-central", created_at=datetime.now(UTC)
            ),
        )

    async def settled() -> bool:
        recs = log.records(rooms)
        if not all(rec is not None and rec.terminal for rec in recs.values()):
            return False
        pass_ = await resync_pass(s)
        return pass_ is not None and float(pass_.get("at") or 0) > since + RESYNC_S

    seen = await _never_listed(s, rooms, settled, 60)
    assert not seen, f"LiveKit listed rooms that never existed (created by a dispatch?): {sorted(seen)}"
    for room in rooms:
        rec = log.latest(room)
        assert rec is not None and rec.state == RoomState.ENDED and rec.reason == "room_gone", _timeline(rec)
        assert rec.dispatch_id is None, f"dispatched anyway: {_timeline(rec)}"
    result.extra["created, room never existed"] = {r: _events(log.latest(r)) for r in rooms}
    return rooms


async def _one_agent(s: Stack, room: str, rec: RoomRecord) -> str | None:
    """None when LiveKit lists exactly the record's agent in the room; else what it lists."""
    agents = await s.agents(room)
    if len(agents) == 1 and agents[0].identity == rec.identity:
        return None
    return (
        f"{room} (sid {rec.sid}): LiveKit lists agents {[a.identity for a in agents]}, record {rec.identity}"
    )


async def _edge_reuse_with_sid(
    s: Stack, log: RecordLog, relay: WebhookRelay, size: Size, result: DrillResult
) -> list[str]:
    """One name, three LiveKit rooms in a row (CreateRoom, DeleteRoom), their events through the
    webhook and the ingest. The second room's room_finished is lost, so the third room's
    room_started meets a live record of the second (a new sid supersedes it) unless the resync
    ended it first. Each incarnation: exactly one agent, never two at once (the sampler)."""
    names = [f"ornina-l3-reuse-sid-{i}" for i in range(max(1, size.edge_rooms - 1))]
    timelines: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        sids: list[str] = []
        for incarnation in range(3):
            room = await create_room(s, name)
            sids.append(room.sid)
            recs = await log.wait_rooms(
                [name],
                _live_with_sid(room.sid),
                size.join_s + GRACE_S,
                f"{name} incarnation {incarnation + 1} ({room.sid}) live",
            )
            rec = recs[name]
            assert rec is not None
            problem = await _one_agent(s, name, rec)
            assert problem is None, problem
            # Its room_started went through the ingest: that event, not the resync, served it.
            assert rec.origin == "event", f"{name} incarnation {incarnation + 1}: {_timeline(rec)}"
            if incarnation < 2:
                if incarnation == 1:  # the second room's end never arrives
                    relay.drop(_drop_event("room_finished", {name}))
                await delete_room(s, name)
                if incarnation == 1:
                    await relay.wait_for(
                        _dropped("room_finished", {name}),
                        30,
                        f"{name}: the second room's room_finished dropped",
                    )
        relay.drop(lambda _e, _r: False)
        timelines[name] = [_incarnation(log, name, sid) for sid in sids]
        for n, sid in enumerate(sids):
            dispatches = timelines[name][n]["dispatches"]
            assert dispatches, f"{name} incarnation {n + 1} ({sid}) never dispatched: {timelines[name]}"
            assert not set(dispatches) & {
                d for m, t in enumerate(timelines[name]) if m != n for d in t["dispatches"]
            }, f"{name}: incarnations shared a dispatch: {timelines[name]}"
        for n, sid in enumerate(sids[:2]):  # the old incarnations ended or were superseded, never failed
            old = log.of_sid(name, sid)
            assert not any(v.state == RoomState.FAILED for v in old), (
                f"{name} incarnation {n + 1}: {timelines[name]}"
            )
        final = log.latest(name)
        assert final is not None and final.sid == sids[2] and final.state in LIVE, _timeline(final)
        problem = await _one_agent(s, name, final)
        assert problem is None, problem
    result.extra["name reuse with sids"] = timelines
    return names


async def _edge_reuse_without_sid(
    s: Stack, log: RecordLog, relay: WebhookRelay, size: Size, result: DrillResult
) -> list[str]:
    """One name, three LiveKit rooms in a row, but the room events are a backend's, published
    directly without a sid and told apart by created_at (LiveKit's webhooks for the name are
    dropped). Each incarnation: exactly one agent, never two at once."""
    names = [f"ornina-l3-reuse-nosid-{i}" for i in range(max(1, size.edge_rooms - 1))]
    timelines: dict[str, list[dict[str, Any]]] = {}
    targets = set(names)
    ended_seqs: list[int] = []
    relay.drop(lambda _e, room: room in targets)
    try:
        for name in names:
            timelines[name] = []
            for incarnation in range(3):
                room = await create_room(s, name)
                at = created_at(room)
                await publish_created(s, RoomCreated(room=name, region="eu-central", created_at=at))
                recs = await log.wait_rooms(
                    [name],
                    _live_created_at(at),
                    size.join_s + GRACE_S,
                    f"{name} incarnation {incarnation + 1} (created {at.isoformat()}) live",
                )
                rec = recs[name]
                assert rec is not None
                timelines[name].append(
                    {
                        "created_at": at.isoformat(),
                        "dispatch_id": rec.dispatch_id,
                        "sid": rec.sid,
                        "state": rec.state.value,
                        "origin": rec.origin,
                    }
                )
                problem = await _one_agent(s, name, rec)
                assert problem is None, problem
                # Served on its own event: the resync (which finds the room a few seconds later)
                # must not be what serves a backend's room event that was taken for a duplicate.
                assert rec.origin == "event", f"{name} incarnation {incarnation + 1}: {_timeline(rec)}"
                if incarnation < 2:
                    await delete_room(s, name)
                    ended_seqs.append(await publish_ended(s, RoomEnded(room=name)))
                    # The name is reused once the record has ended (by this end, or by the agent's
                    # `left`, whichever is first: the end event may still be on its way, and must
                    # not end the next incarnation when it arrives).
                    await log.wait_rooms(
                        [name], lambda rec: rec.terminal, 30, f"{name} incarnation {incarnation + 1} ended"
                    )
            dispatches = [t["dispatch_id"] for t in timelines[name]]
            assert len(set(dispatches)) == 3, f"{name}: incarnations shared a dispatch: {timelines[name]}"
    finally:
        relay.drop(lambda _e, _r: False)
    result.extra["name reuse without sids"] = timelines
    # A sid-less rooms.ended is deduplicated by the room name alone (RoomEnded.dedupe_id): the end
    # of a reused name's second incarnation within JetStream's 600 s window is not stored. Reported
    # (the worker's `left` or the resync still end the record), not asserted.
    result.extra["sid-less rooms.ended stored / published"] = f"{len(set(ended_seqs))} / {len(ended_seqs)}"
    return names


async def _edge_deleted_in_flight(
    s: Stack,
    log: RecordLog,
    gate: ApiGate,
    relay: WebhookRelay,
    size: Size,
    result: DrillResult,
    *,
    answer: bool,
) -> list[str]:
    """The room is deleted while our CreateDispatch for it is in flight: held at the gate before
    LiveKit sees it (LiveKit then gets a CreateDispatch for a room that is gone, which creates a
    room), or with LiveKit's answer held (the dispatch landed in the room just deleted). After the
    dust settles no room of that name has an agent in it."""
    flavour = "answer" if answer else "request"
    rooms = [f"ornina-l3-inflight-{flavour}-{i}" for i in range(size.edge_rooms)]
    report: dict[str, Any] = {}
    for room in rooms:
        gate.hold(_method_for("CreateDispatch", room), answer=answer)
        try:
            made = await create_room(s, room)  # its webhook goes through: the ordinary path
            await gate.wait_held(1, GRACE_S + 30)
            await delete_room(s, room)
            await wait_until(
                functools.partial(_absent, s, room, made.sid), 10, f"{room}: gone from LiveKit's list"
            )
            # Released once the room's end is on its way to the orchestrator (the ingest took it).
            await relay.wait_for(_forwarded("room_finished", room), 30, f"{room}: room_finished forwarded")
        finally:
            gate.release()
        since = time.time()

        async def settled(room: str = room) -> bool:
            rec = log.latest(room)
            if rec is None or not rec.terminal:
                return False
            return not await _agents(s, room)

        try:
            await wait_until(settled, 60 + 2 * RESYNC_S, f"{room}: record terminal and no agent in the room")
        except AssertionError as err:
            agents = [a.identity for a in await _agents(s, room)]
            raise AssertionError(f"{err}; agents {agents}; {_timeline(log.latest(room))}") from None
        # Then two more resync passes: a ghost room must not be served by them either.
        passes: list[int] = []
        deadline = time.monotonic() + 3 * RESYNC_S + 10
        last_at = since
        while len(passes) < 2 and time.monotonic() < deadline:
            agents = await _agents(s, room)
            assert not agents, (
                f"{room}: agent(s) {[a.identity for a in agents]} in the room after it settled: "
                + _timeline(log.latest(room))
            )
            got = await resync_pass(s)
            at = float(got["at"]) if got and got.get("at") else 0.0
            if at > last_at:
                passes.append(int(at))
                last_at = at
            await asyncio.sleep(0.5)
        assert len(passes) >= 2, f"{room}: fewer than 2 resync passes in {3 * RESYNC_S + 10}s"
        rec = log.latest(room)
        still = await listed(s, [room])
        report[room] = {
            "original_sid": made.sid,
            "listed_after": {n: r.sid for n, r in still.items()},
            "ghost_sid": rec.ghost_sid if rec else None,
            "final": f"{rec.state.value}/{rec.reason}" if rec else None,
            "events": _events(rec),
            "held": [
                (h.method, round((h.released or 0) - h.arrived, 2)) for h in gate.held if h.room == room
            ],
        }
        assert rec is not None and rec.terminal, _timeline(rec)
    result.extra[f"deleted, CreateDispatch {flavour} in flight"] = report
    return rooms


async def _agents(s: Stack, room: str) -> list[Any]:
    """The agents LiveKit lists in ``room``; none when it has no such room."""
    if room not in await listed(s, [room]):
        return []
    try:
        return await s.agents(room)
    except lkapi.TwirpError as err:
        if err.code == "not_found":
            return []  # deleted between the two calls
        raise


async def _absent(s: Stack, room: str, sid: str) -> bool:
    got = await listed(s, [room])
    return room not in got or got[room].sid != sid


def _incarnation(log: RecordLog, room: str, sid: str) -> dict[str, Any]:
    versions = log.of_sid(room, sid)
    return {
        "sid": sid,
        "dispatches": sorted({v.dispatch_id for v in versions if v.dispatch_id}),
        "states": list(dict.fromkeys(v.state.value for v in versions)),
        "origin": versions[-1].origin if versions else None,
        "final": f"{versions[-1].state.value}/{versions[-1].reason}" if versions else None,
    }


# ----------------------------------------------------------------------------------------------
# 8.4 LiveKit API down during a burst
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sizes())
async def test_drill_8_4_livekit_down_during_burst(size: Size, tmp_path: Any) -> None:
    result = DrillResult(
        f"8.4 LiveKit API down {size.outage_s:g} s (refused, then unanswered) during a burst", size.name
    )
    started = time.monotonic()
    rooms = [f"ornina-l4-{i}" for i in range(size.burst)]
    speak = rooms[: size.listeners]
    config = drill_config(resync_interval_s=RESYNC_S, resync_grace_s=GRACE_S)
    after_bound = size.join_s + 60  # API back -> every room live (dispatch, join, speak)
    async with stack(tmp_path, config) as s:
        assert s.livekit is not None
        await start_pools(s, size)
        async with FaultProxy("127.0.0.1", s.livekit.port) as proxy:
            await s.start_orchestrators(2, livekit_url=proxy.url)
            async with RecordLog(s) as log, listeners(s, speak):
                await proxy.set_mode("down")
                down_at = time.time()
                # The burst: rooms exist in LiveKit (the listener rooms since their listener
                # joined), their events arrive while the API is refused.
                existing = await listed(s, speak)
                for room in rooms:
                    lk_room = existing.get(room) or await create_room(s, room)
                    await publish_created(
                        s,
                        RoomCreated(
                            room=room, sid=lk_room.sid, region="eu-central", created_at=created_at(lk_room)
                        ),
                    )
                burst_s = time.time() - down_at
                # What an operator sees meanwhile: `switchboard status --json`, asked until it
                # shows rooms waiting for LiveKit (rooms alternate between a round of tries,
                # `dispatching`, and waiting), within the fault's first half.
                status_during, status_asked = await _status_until_waiting(s, down_at + size.outage_s / 2)
                await _sleep_until(down_at + size.outage_s / 2)  # the fault's first half: refused
                await proxy.set_mode("blackhole")  # the second half: accepted, never answered
                await _sleep_until(down_at + size.outage_s)
                waiting_seen = [r for r in rooms if RoomState.WAITING_FOR_LIVEKIT in log.states_seen(r)]
                live_during = [r for r in rooms if log.states_seen(r) & LIVE]
                await proxy.set_mode("pass")
                back_at = time.time()
                records = await log.wait_rooms(
                    rooms,
                    lambda rec: rec.state == RoomState.SPEAKING if rec.room in speak else rec.state in LIVE,
                    after_bound,
                    "every room live after LiveKit's API is back",
                )
                failed_ever = [r for r in rooms if log.states_seen(r) & {RoomState.FAILED, RoomState.ENDED}]
                await s.finish(result, rooms, records, speak)
                result.extra["connections_by_mode"] = dict(proxy.connections)
    result.recovery_s = [max(0.0, t - back_at) for r in rooms if (t := live_at(records[r])) is not None]
    reasons = Counter(
        v.reason or "-"
        for r in rooms
        for v in log.versions.get(r, [])
        if v.state == RoomState.WAITING_FOR_LIVEKIT
    )
    result.extra.update(
        {
            "outage_s": size.outage_s,
            "burst_published_in_s": round(burst_s, 1),
            "rooms_seen_waiting_for_livekit": len(waiting_seen),
            "waiting_reasons": dict(reasons),
            "live_during_outage": len(live_during),
            "ever_failed_or_ended": failed_ever,
            "status_during_outage": status_during,
            "status_asked": status_asked,
            "after_bound_s": after_bound,
        }
    )
    result.notes.append(
        "recovery: LiveKit's API back -> room live; the API refused connections for the first half "
        "of the outage and accepted but never answered for the second"
    )
    result.duration_s = time.monotonic() - started
    save_result(result)
    summary = result.summary()
    assert waiting_seen, f"no room was ever waiting_for_livekit during the outage: {summary}"
    assert not failed_ever, f"rooms failed or ended: {failed_ever}: {summary}"
    assert (status_during or {}).get("waiting_for_livekit", 0) > 0, (
        f"status during the outage: {status_during}"
    )
    assert not live_during, f"rooms live while the API was down? {live_during}"
    assert result.lost == 0 and result.failed == 0, summary
    assert result.live_at_end == len(rooms), summary
    assert result.speaking_at_end == len(speak), summary
    assert result.double_agents == 0 and result.rooms_without_agent == 0, summary
    assert result.samples > 0, summary
    assert not result.extra.get("secret_leaks"), summary


async def _sleep_until(wall: float) -> None:
    """The fault lasts a fixed time: that is the drill's parameter, not a wait for an event."""
    await asyncio.sleep(max(0.0, wall - time.time()))


async def _status_until_waiting(s: Stack, until: float) -> tuple[dict[str, int] | None, int]:
    """``status --json`` until its rooms by state show ``waiting_for_livekit`` or wall time
    ``until``; the last answer and how many times it was asked."""
    asked = 0
    got: dict[str, int] | None = None
    while time.time() < until:
        got = await _status_json(s)
        asked += 1
        if (got or {}).get("waiting_for_livekit", 0) > 0:
            break
        await asyncio.sleep(0.5)
    return got, asked


async def _status_json(s: Stack) -> dict[str, int] | None:
    """``switchboard status --json`` as an operator runs it: its rooms by state."""
    proc = await asyncio.create_subprocess_exec(
        SWITCHBOARD,
        "status",
        "--json",
        env={**os.environ, "NATS_URL": s.nats_url, "SWITCHBOARD_CONFIG": str(s.config_path)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    if proc.returncode != 0:
        print(f"status --json exited {proc.returncode}: {err.decode()[-500:]}")
        return None
    data = json.loads(out)
    by_state = data.get("rooms_by_state")
    return dict(by_state) if isinstance(by_state, dict) else None
