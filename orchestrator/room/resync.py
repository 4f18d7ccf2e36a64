"""Anti-entropy: LiveKit's room list against the records, level-triggered, like a controller's resync.

Webhooks get lost (LiveKit's notifier drops events from a full queue or older than 30 s; an ingest
restart is enough), and an agent can leave without a word. So every ``resync_interval_s`` each
replica lists LiveKit's rooms once and compares them with the records of the partitions it tracks
(:mod:`orchestrator.ownership`):

1. a room that matches a rule and has no record (or only one of an older room of that name) is
   handled as its ``room_started`` would have been, with origin ``resync``;
2. a live record whose room LiveKit no longer lists (or lists under another sid) ends
   (``room_gone``): its ``room_finished`` was lost, and it would hold its pool's headroom forever;
3. a ``joined``/``speaking`` record whose job no heartbeat of its pool lists is checked against the
   room's participants; an agent not there is dispatched again (``agent_lost``).

Rooms and records younger than ``resync_grace_s`` are left to their events. Each finding goes
through the reconciler like any other fact, so the decisions are the same pure functions, and one
room's failure never stops the pass. The last pass of any replica is written in KV bucket
``switchboard_resync`` for ``doctor`` (:class:`PassLog`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from orchestrator.consumer import is_transient
from orchestrator.index import RoomEntry
from orchestrator.ingest.translate import BadEvent, room_created
from orchestrator.livekit_gateway import LiveKitCallError, LiveRoom
from orchestrator.records import RoomState
from orchestrator.room.decide import incarnation
from orchestrator.room.facts import AgentLost, Vanished
from orchestrator.room.ports import LiveKit
from orchestrator.rules import match_rule
from orchestrator.store import open_or_create_kv
from shared import subjects
from shared.messages import RoomCreated

if TYPE_CHECKING:
    from orchestrator.room.reconciler import Reconciler

log = logging.getLogger(__name__)

# Rooms the pass works on at once (each one a KV read and write, maybe LiveKit calls).
CONCURRENCY = 16
# How long a listed room whose (terminal) record was read is not read again.
SETTLED_S = 60.0


@dataclass(frozen=True, slots=True)
class PassReport:
    """One pass, as ``doctor`` shows it (key ``pass`` carries the last one: :class:`PassLog`)."""

    at: float  # unix seconds, when ListRooms was asked
    rooms: int  # rooms LiveKit listed
    found: int  # rooms served although their event never arrived
    ended: int  # records ended because LiveKit no longer lists their room
    agent_lost: int  # rooms dispatched again because their agent was gone
    seconds: float
    error: str | None = None


class PassLog:
    """The last pass of any replica, in key ``pass`` of bucket ``switchboard_resync`` (each replica
    passes over its own partitions; ``found_total`` adds up every replica's finds)."""

    def __init__(self, kv: KeyValue, replica: str) -> None:
        self.kv = kv
        self.replica = replica

    async def record(self, report: PassReport) -> None:
        """Best effort: a write lost three times in a row only ages ``doctor``'s view."""
        for _ in range(3):
            try:
                entry = await self.kv.get(subjects.RESYNC_KEY)
                value: dict[str, Any] = json.loads(entry.value or b"{}")
                revision: int | None = entry.revision
            except KeyNotFoundError:
                value, revision = {}, None
            except ValueError:
                value, revision = {}, None
            if not isinstance(value, dict):
                value = {}
            found_total = int(value.get("found_total") or 0) + report.found
            value = {**value, **asdict(report), "owner": self.replica, "found_total": found_total}
            value.pop("until", None)  # a lease of a build before partitions
            if report.found:
                value.update(last_found_at=report.at, last_found=report.found)
            try:
                if revision is None:
                    await self.kv.create(subjects.RESYNC_KEY, _encode(value))
                else:
                    await self.kv.update(subjects.RESYNC_KEY, _encode(value), last=revision)
                return
            except KeyWrongLastSequenceError:
                continue  # another replica wrote its pass in between: add ours to it


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def open_resync_bucket(
    js: JetStreamContext, replicas: int = 1, cell: subjects.Cell = subjects.SHARED
) -> KeyValue:
    """Bind to the resync bucket, creating it if missing."""
    return await open_or_create_kv(
        js,
        cell.resync_bucket,
        "Switchboard resync: which replica lists LiveKit's rooms, and its last pass",
        replicas,
        cell=cell,
    )


async def read_last_pass(
    js: JetStreamContext, cell: subjects.Cell = subjects.SHARED
) -> dict[str, Any] | None:
    """Key ``pass``: the last pass of any replica (and which one); None when no resync ever ran."""
    try:
        kv = await js.key_value(cell.resync_bucket)
        entry = await kv.get(subjects.RESYNC_KEY)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    try:
        value = json.loads(entry.value or b"{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Resync:
    def __init__(
        self,
        reconciler: Reconciler,
        livekit: LiveKit,
        passes: PassLog | None = None,
        region: str | None = None,
        elsewhere: Callable[[str], Awaitable[bool | None]] | None = None,
    ) -> None:
        self.r = reconciler
        # With per-region state, this replica's region: LiveKit lists every node's rooms (and says
        # of none which node or region hosts it), so each region adopts only the rooms homed in it
        # (their metadata's region, else the config's default region), and only those no other
        # region's cell knows (``elsewhere``: orchestrator/other_cells.py): one region per room.
        self.region = region
        self.elsewhere = elsewhere
        self.livekit = livekit
        self.passes = passes
        self.cfg = reconciler.cfg
        # Rooms LiveKit lists whose record (a terminal one: the index keeps only live records) was
        # read and found to cover them: name -> (sid, until when not to read it again). Kept to the
        # names of the last listing; read again after SETTLED_S (a stale end is found then).
        self._settled: dict[str, tuple[str | None, float]] = {}

    async def run(self, ready: Callable[[], bool]) -> None:
        """Every ``resync_interval_s``: make one pass, write it down."""
        interval = self.cfg.resync_interval_s
        while True:
            await asyncio.sleep(interval)
            if not ready():
                continue
            try:
                report = await self.pass_once()
                if self.passes is not None:
                    await self.passes.record(report)
            except Exception as err:
                log.warning("resync pass failed: %r", err, exc_info=not is_transient(err))

    async def pass_once(self) -> PassReport:
        r = self.r
        listed_at = r.clocks.wall()
        began = time.perf_counter()
        try:
            rooms = await self.livekit.list_rooms()
        except LiveKitCallError as err:
            # LiveKit away: nothing can be concluded (rooms wait in waiting_for_livekit meanwhile).
            report = PassReport(listed_at, 0, 0, 0, 0, time.perf_counter() - began, str(err))
            r.observer.resync_pass(report.seconds, "error")
            log.warning("resync: ListRooms failed: %s", err)
            return report
        listed = {room.name: room for room in rooms}
        found, ended, lost = await asyncio.gather(
            self._run_all([self._found(room, listed_at) for room in self._unserved(rooms, listed_at)]),
            self._run_all(
                [self._vanished(rec, listed, listed_at) for rec in self._missing(listed, listed_at)]
            ),
            self._run_all([self._agent_lost(rec, listed_at) for rec in self._silent_jobs(listed, listed_at)]),
        )
        self._settled = {name: sid for name, sid in self._settled.items() if name in listed}
        report = PassReport(listed_at, len(rooms), found, ended, lost, time.perf_counter() - began)
        r.observer.resync_pass(report.seconds, "ok")
        if found or ended or lost:
            log.warning(
                "resync: %d room(s) served whose event never arrived, %d ended whose end never "
                "arrived, %d whose agent was gone (%d rooms listed)",
                found,
                ended,
                lost,
                len(rooms),
            )
        return report

    # -- what the list says ----------------------------------------------------------------------

    def _unserved(self, rooms: list[LiveRoom], listed_at: float) -> list[LiveRoom]:
        """Listed rooms that match a rule and that no record of this room covers."""
        out: list[LiveRoom] = []
        for room in rooms:
            if room.created_at is not None and room.created_at > listed_at - self.cfg.resync_grace_s:
                continue  # its room_started is normally in flight at this age
            settled = self._settled.get(room.name)
            if settled is not None and settled[0] == room.sid and settled[1] > listed_at:
                continue
            rec = self.r.index.get(room.name)
            if rec is not None and rec.sid in (room.sid, None) and rec.ghost_sid != room.sid:
                continue  # this very room's record (our ghost's is looked at: a caller may be in it)
            if not self.r.tracks(room.name) or match_rule(room.name, self.r.config.rules).rule is None:
                continue  # another replica's partition, or no rule of ours
            out.append(room)
        return out

    def _missing(self, listed: dict[str, LiveRoom], listed_at: float) -> list[RoomEntry]:
        """Live records older than the grace whose room LiveKit does not list (this incarnation)."""
        out: list[RoomEntry] = []
        for rec in self.r.index.live():
            if rec.terminal or rec.received_at > listed_at - self.cfg.resync_grace_s:
                continue
            room = listed.get(rec.room)
            if room is None or (rec.sid is not None and room.sid is not None and room.sid != rec.sid):
                out.append(rec)
        return out

    def _silent_jobs(self, listed: dict[str, LiveRoom], listed_at: float) -> list[RoomEntry]:
        """Rooms with an agent whose job no heartbeat of its (live) pool lists."""
        mono = self.r.clocks.mono()
        views = {v.pool: v for v in self.r.registry.snapshot(mono)}
        complete: dict[str, bool] = {}
        out: list[RoomEntry] = []
        for rec in self.r.index.live():
            if rec.state not in (RoomState.JOINED, RoomState.SPEAKING) or rec.room not in listed:
                continue
            view = views.get(rec.pool or "")
            if view is None or view.liveness == "dead" or rec.dispatch_id in view.jobs:
                continue  # a dead pool is the sweep's (pool_dead)
            if not complete.setdefault(view.pool, self.r.registry.jobs_complete(view.pool, mono)):
                continue  # a beat of its was missed: its list is whole again within FULL_EVERY beats
            if (rec.joined_at or rec.voice_at or listed_at) <= listed_at - self.cfg.resync_grace_s:
                out.append(rec)
        return out

    # -- acting on it, each room on its own ------------------------------------------------------

    async def _found(self, room: LiveRoom, listed_at: float) -> int:
        try:
            event = room_created(
                room.name,
                room.sid,
                room.metadata,
                (room.created_at or 0.0) * 1000,
                self.r.config.default_region,
            ).message
        except BadEvent as err:
            log.warning("resync: LiveKit room %r cannot become a room event: %s", room.name, err)
            return 0
        if not isinstance(event, RoomCreated):
            return 0
        if self.region is not None and event.region != self.region:
            self._settled[room.name] = (room.sid, listed_at + SETTLED_S)
            return 0  # another region's room: its own region's resync adopts it
        if self.elsewhere is not None:
            known = await self.elsewhere(room.name)
            if known:  # another region took its event: theirs
                self._settled[room.name] = (room.sid, listed_at + SETTLED_S)
            if known is not False:
                return 0  # theirs, or a region could not be asked: asked again next pass
        current = self.r.index.get(room.name)
        if current is not None and incarnation(current, event) not in ("newer", "ghost"):
            return 0
        ghost = False

        async def occupied() -> bool:
            # Our ghost, until a caller is in it: LiveKit puts a user opening the name there (no
            # room_started: the room exists), and that user is owed an agent. Asked again on
            # every pass while the ghost is listed.
            nonlocal ghost
            ghost = True
            return room.participants > 0 and bool(await self.livekit.callers(room.name))

        served = await self.r.on_room_created(event, origin="resync", occupied=occupied)
        if not served and not ghost:
            self._settled[room.name] = (room.sid, listed_at + SETTLED_S)
        return int(served)

    async def _vanished(self, rec: RoomEntry, listed: dict[str, LiveRoom], listed_at: float) -> int:
        room = listed.get(rec.room)
        changed = await self.r.on_fact(rec.room, Vanished(room.sid if room else None, listed_at))
        if changed:
            self.r.observer.reconciled("ended")
        return int(changed)

    async def _agent_lost(self, rec: RoomEntry, listed_at: float) -> int:
        present = await self.livekit.participants(rec.room)
        if present is None or rec.identity is None or rec.identity in present:
            return 0
        changed = await self.r.on_fact(rec.room, AgentLost(rec.identity, listed_at))
        if changed:
            self.r.observer.reconciled("agent_lost")
        return int(changed)

    async def _run_all(self, steps: list[Awaitable[int]]) -> int:
        """Run the steps, at most CONCURRENCY at once, each keeping its own failure; how many acted."""
        limit = asyncio.Semaphore(CONCURRENCY)
        done = 0

        async def one(step: Awaitable[int]) -> None:
            nonlocal done
            async with limit:
                try:
                    acted = await step  # awaited first: `done += await step` would read `done` before
                    done += acted
                except Exception as err:
                    log.warning(
                        "resync step deferred to the next pass: %r", err, exc_info=not is_transient(err)
                    )

        async with asyncio.TaskGroup() as tg:
            for step in steps:
                tg.create_task(one(step))
        return done


__all__ = ["PassLog", "PassReport", "Resync", "open_resync_bucket", "read_last_pass"]
