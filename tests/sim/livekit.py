"""LiveKit's server API, simulated: rooms, dispatches, jobs and participant lists.

The ground truth the invariants are checked against: which agents are in which room, which
dispatches exist. Calls behave as over the wire (see :class:`SimLiveKit._call`): a seeded delay to
the server, applied there, an answer back — or a fault: refused (not applied), answer lost or a 5xx
after applying (ambiguous), applied only after the caller's timeout (slow), a 5xx on a removal
(not applied), an outage. A caller cancelled mid-call does not un-send its request.

As in LiveKit: CreateDispatch creates the room if it does not exist (a *ghost* room: its
room_started webhook goes out like any other's; once it has been empty for ``GHOST_EMPTY_S`` it
closes, with a room_finished); a user opening a room whose ghost is there joins the ghost (no
room_started: the room existed), which is then a user's room; DeleteDispatch does not stop a job
already assigned (its agent still joins); removing the agent ends its job (the worker reports
``left``); deleting a room ends every job in it. "Gone" answers are ``not_found`` (permanent).
Every room has a sid and a creation time (``ListRooms``, ``room_info``).

A room may be *doomed* (the script's dispatch race): it is deleted right after the dispatch's
existence check (``room_info``) answered, or just before a CreateDispatch reaches the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from orchestrator.livekit_gateway import DispatchJobs, ListedDispatch, LiveKitCallError, LiveRoom
from shared.dispatch_metadata import read_dispatch_metadata
from tests.sim.config import AGENT_GHOST_S, GHOST_EMPTY_S, LK_TIMEOUT_S
from tests.sim.faults import Call
from tests.sim.loop import ACTIVITY, ACTOR

if TYPE_CHECKING:
    from tests.sim.pools import Job
    from tests.sim.world import World

T = TypeVar("T")


@dataclass(slots=True)
class Dispatch:
    id: str
    room: str
    agent_name: str
    metadata: str
    key: str | None  # our attempt key, parsed from the metadata
    room_sid: str = ""  # the room (this incarnation) the dispatch is in: its jobs' room
    deleted: bool = False
    jobs: list[str] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class LkRoom:
    name: str
    sid: str
    created_at: float  # unix seconds (the world's wall clock)
    ghost: bool = False  # made by CreateDispatch, no user has joined it
    participants: dict[str, str] = field(default_factory=dict)  # identity -> "agent" | "standard"
    dispatches: dict[str, Dispatch] = field(default_factory=dict)
    emptied: int = 0  # bumped whenever the room becomes empty or gains someone (ghost closing)

    def agents(self) -> list[str]:
        return [i for i, kind in self.participants.items() if kind == "agent"]


def _listed(lk_room: LkRoom) -> LiveRoom:
    return LiveRoom(lk_room.name, lk_room.sid, lk_room.created_at, "", len(lk_room.participants))


def _show(result: object) -> object:
    if isinstance(result, LiveRoom):
        return f"sid {result.sid}"
    if isinstance(result, list):
        return " ".join(f"{r.name}/{r.sid}" if isinstance(r, LiveRoom) else str(r) for r in result)
    return result


def _not_found(what: str) -> LiveKitCallError:
    return LiveKitCallError("not_found", f"{what}: not found", permanent=True)


class SimLiveKit:
    """The gateway surface (see the module docstring) plus the world's own doors (open_room,
    close_room, join, leave, ghost) that the script and the worker pools use."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.rooms: dict[str, LkRoom] = {}
        self.dispatches: dict[str, Dispatch] = {}
        self.jobs: dict[str, Job] = {}  # job id -> job (identity agent-<job id>)
        self._ids = 0
        self._calls: dict[tuple[str, str], int] = {}
        self.doomed: dict[str, tuple[str, str]] = {}  # room -> (sid, after_check | on_wire)

    # ==============================================================================================
    # the gateway surface
    # ==============================================================================================

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        info = read_dispatch_metadata(metadata).info
        key = info.key if info is not None else None
        checks = self.world.checks
        self.world.log(ACTOR.get(), f"lk.create_dispatch {room} {agent_name} key {key}: sent")
        checks.on_create_sent(room, key)

        def apply() -> str:
            lk_room = self.rooms.get(room)
            if lk_room is None:  # LiveKit creates the room for a dispatch: a ghost room
                lk_room = self._add_room(room, f"RM_auto{self._next()}", ghost=True)
                self.world.log(
                    "livekit", f"room {room} created by CreateDispatch (sid {lk_room.sid}, a ghost: no user)"
                )
                self.world.ghost_opened(lk_room)
                self._empty(lk_room)
            dispatch = Dispatch(f"AD_{self._next()}", room, agent_name, metadata, key, lk_room.sid)
            lk_room.dispatches[dispatch.id] = dispatch
            self.dispatches[dispatch.id] = dispatch
            self.world.log("livekit", f"dispatch {dispatch.id} created in {room} for {agent_name} key {key}")
            self.world.workers.assign(dispatch, info.attempt if info else 0)
            return dispatch.id

        try:
            return await self._call("create_dispatch", room, apply, f"{agent_name} key {key}")
        finally:
            checks.on_create_done(key)

    async def find_dispatch(self, room: str, agent_name: str, key: str) -> str | None:
        self.world.checks.on_look(key)

        def apply() -> str | None:
            lk_room = self.rooms.get(room)
            if lk_room is None:
                return None
            for d in lk_room.dispatches.values():
                if not d.deleted and d.agent_name == agent_name and d.key == key:
                    return d.id
            return None

        return await self._call("find_dispatch", room, apply, f"key {key}")

    async def room_dispatches(self, room: str) -> list[ListedDispatch] | None:
        def apply() -> list[ListedDispatch] | None:
            lk_room = self.rooms.get(room)
            if lk_room is None:
                return None
            out = []
            for d in lk_room.dispatches.values():
                if d.deleted:
                    continue
                info = read_dispatch_metadata(d.metadata).info
                jobs = frozenset(f"agent-{j}" for j in d.jobs)
                out.append(ListedDispatch(d.id, d.agent_name, d.key, info.sid if info else None, jobs))
            return out

        return await self._call("room_dispatches", room, apply)

    async def dispatch_jobs(self, room: str, dispatch_id: str) -> DispatchJobs | None:
        def apply() -> DispatchJobs | None:
            lk_room = self.rooms.get(room)
            d = lk_room.dispatches.get(dispatch_id) if lk_room is not None else None
            if d is None or d.deleted:
                return None
            return DispatchJobs(len(d.jobs), frozenset(f"agent-{j}" for j in d.jobs))

        return await self._call("dispatch_jobs", room, apply, dispatch_id)

    async def delete_dispatch(self, dispatch_id: str, room: str) -> None:
        def apply() -> None:
            lk_room = self.rooms.get(room)
            d = lk_room.dispatches.get(dispatch_id) if lk_room is not None else None
            if lk_room is None or d is None or d.deleted:
                raise _not_found(f"DeleteDispatch {dispatch_id}")
            d.deleted = True
            del lk_room.dispatches[dispatch_id]
            self.world.log("livekit", f"dispatch {dispatch_id} deleted in {room} (its jobs run on)")

        await self._call("delete_dispatch", room, apply, dispatch_id)

    async def remove_participant(self, room: str, identity: str) -> None:
        def apply() -> None:
            lk_room = self.rooms.get(room)
            if lk_room is None or identity not in lk_room.participants:
                raise _not_found(f"RemoveParticipant {identity}")
            self._drop(lk_room, identity, "removed from the room")

        await self._call("remove_participant", room, apply, identity)

    async def participants(self, room: str) -> frozenset[str] | None:
        def apply() -> frozenset[str] | None:
            lk_room = self.rooms.get(room)
            return frozenset(lk_room.participants) if lk_room is not None else None

        return await self._call("participants", room, apply)

    async def roster(self, room: str) -> dict[str, str | None] | None:
        def apply() -> dict[str, str | None] | None:
            lk_room = self.rooms.get(room)
            if lk_room is None:
                return None
            return {
                i: self._agent_name(i) if kind == "agent" else None
                for i, kind in lk_room.participants.items()
            }

        return await self._call("roster", room, apply)

    def _agent_name(self, identity: str) -> str:
        job = self.jobs.get(identity.removeprefix("agent-"))
        return job.pool.agent_name if job is not None else ""

    async def callers(self, room: str) -> frozenset[str] | None:
        def apply() -> frozenset[str] | None:
            lk_room = self.rooms.get(room)
            if lk_room is None:
                return None
            return frozenset(i for i, kind in lk_room.participants.items() if kind != "agent")

        return await self._call("callers", room, apply)

    async def room_exists(self, room: str) -> bool:
        return await self._call("room_exists", room, lambda: room in self.rooms)

    async def room_info(self, room: str) -> LiveRoom | None:
        def apply() -> LiveRoom | None:
            lk_room = self.rooms.get(room)
            return _listed(lk_room) if lk_room is not None else None

        return await self._call("room_info", room, apply)

    async def list_rooms(self) -> list[LiveRoom]:
        def apply() -> list[LiveRoom]:
            listed = [_listed(r) for r in self.rooms.values()]
            self.world.log(ACTOR.get(), f"lk.list_rooms: {' '.join(f'{r.name}/{r.sid}' for r in listed)}")
            return listed

        return await self._call("list_rooms", "-", apply)

    async def check_credentials(self) -> None:
        await self._call("check_credentials", "-", lambda: None)

    # ==============================================================================================
    # the wire
    # ==============================================================================================

    async def _call(self, op: str, room: str, apply: Callable[[], T], detail: str = "") -> T:
        world = self.world
        actor = ACTOR.get()
        n = self._calls.get((op, room), 0)
        self._calls[(op, room)] = n + 1
        plan = world.faults.lk(Call("lk", op, room, actor, ACTIVITY.get(), None, None, n))
        what = f"lk.{op} {room} {detail}".rstrip()
        answer: asyncio.Future[T] = world.loop.create_future()

        def reply(result: T | None, error: BaseException | None) -> None:
            if answer.done():
                return  # the caller gave up (timeout) or is gone (crash)
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(result)  # type: ignore[arg-type]

        def at_server() -> None:
            if plan.outcome == "drop":
                world.log(actor, f"{what}: FAULT unanswered (LiveKit down), not applied")
                return
            if op == "create_dispatch" and plan.outcome not in ("refuse", "blip"):
                self._race(room, "on_wire")
            if plan.outcome == "refuse":
                world.log(actor, f"{what}: FAULT refused (unreachable), not applied")
                reply(None, LiveKitCallError("unreachable", f"{op}: cannot connect", permanent=False))
                return
            if plan.outcome == "blip":
                world.log(actor, f"{what}: FAULT 503, not applied")
                reply(None, LiveKitCallError("unavailable", f"{op}: 503", permanent=False, ambiguous=True))
                return
            try:
                result: T | None = apply()
                error: BaseException | None = None
            except LiveKitCallError as exc:
                result, error = None, exc
            if op == "room_info" and result is not None:
                self._race(room, "after_check")
            shown = error.reason if isinstance(error, LiveKitCallError) else _show(result)
            if plan.outcome == "lost":
                world.log(actor, f"{what}: FAULT applied ({shown}), answer lost")
                return
            if plan.outcome == "error_landed":
                world.log(actor, f"{what}: FAULT applied ({shown}), answered 503")
                error = LiveKitCallError("unavailable", f"{op}: 503", permanent=False, ambiguous=True)
            elif plan.outcome == "slow":
                world.log(actor, f"{what}: FAULT slow, applied late ({shown})")
            elif op in _LOGGED:
                world.log(actor, f"{what}: {shown}")
            world.later(plan.answer, lambda: reply(result, error))

        world.later(plan.delay, at_server)
        try:
            async with asyncio.timeout(LK_TIMEOUT_S):
                return await answer
        except TimeoutError:
            world.log(actor, f"{what}: timed out after {LK_TIMEOUT_S:g}s")
            world.checks.on_call_failed(room)
            raise LiveKitCallError(
                "timeout", f"{op}: LiveKit did not answer in time", permanent=False, ambiguous=True
            ) from None
        except LiveKitCallError as err:
            if err.reason != "not_found":
                world.checks.on_call_failed(room)
            raise

    # ==============================================================================================
    # the world's side: rooms opened and closed by the script, agents joining and leaving
    # ==============================================================================================

    def _next(self) -> int:
        self._ids += 1
        return self._ids

    def _add_room(self, name: str, sid: str, ghost: bool = False) -> LkRoom:
        lk_room = LkRoom(name, sid, self.world.wall(), ghost)
        self.rooms[name] = lk_room
        return lk_room

    def open_room(self, name: str, sid: str) -> tuple[LkRoom, bool]:
        """A user creates the room and is in it (then the ingest publishes RoomCreated); a ghost
        room of that name is joined instead (no room_started: it existed). Returns the room and
        whether it is new."""
        lk_room = self.rooms.get(name)
        fresh = lk_room is None
        if lk_room is None:
            lk_room = self._add_room(name, sid)
        else:
            lk_room.ghost = False
            lk_room.emptied += 1
            self.world.checks.on_participants(name, len(lk_room.agents()))
        lk_room.participants[f"user-{name}"] = "standard"
        return lk_room, fresh

    def close_room(self, name: str) -> LkRoom | None:
        """The room ends (DeleteRoom or everyone left): every participant goes, every job ends."""
        lk_room = self.rooms.pop(name, None)
        self.doomed.pop(name, None)
        if lk_room is None:
            return None
        for identity in list(lk_room.participants):
            self._drop(lk_room, identity, "room deleted")
        for d in lk_room.dispatches.values():
            d.deleted = True
        self.world.checks.on_participants(name, 0)
        return lk_room

    def doom(self, name: str, sid: str, when: str) -> None:
        """Delete this room (this incarnation) when its dispatch is in flight (``when``)."""
        self.doomed[name] = (sid, when)

    def _race(self, name: str, when: str) -> None:
        doomed = self.doomed.get(name)
        lk_room = self.rooms.get(name)
        if doomed is None or lk_room is None or doomed != (lk_room.sid, when):
            return
        del self.doomed[name]
        self.world.log("livekit", f"room {name} deleted while its dispatch is in flight ({when})")
        self.world.close_incarnation(name, lk_room.sid)

    def _empty(self, lk_room: LkRoom) -> None:
        """A ghost room just became (or was made) empty: it closes if it stays so."""
        if not lk_room.ghost or lk_room.participants:
            return
        lk_room.emptied += 1
        token = lk_room.emptied

        def close() -> None:
            if self.rooms.get(lk_room.name) is lk_room and lk_room.ghost and lk_room.emptied == token:
                self.world.log("livekit", f"ghost room {lk_room.name} ({lk_room.sid}) closes: empty")
                self.world.close_incarnation(lk_room.name, lk_room.sid)

        self.world.later(GHOST_EMPTY_S, close)

    def join(self, job: Job) -> bool:
        """The job's agent connects; False when its room is gone (the job then fails): the worker
        checks the room and its sid before connecting, and leaves (deleting it when empty) a room
        its connect made again (agent_worker/job.py); a newer room of the name is not its room."""
        lk_room = self.rooms.get(job.room)
        if lk_room is None or lk_room.sid != job.room_sid:
            return False
        lk_room.participants[job.identity] = "agent"
        lk_room.emptied += 1
        self.jobs[job.id] = job
        self.world.log("livekit", f"{job.identity} joined {job.room} (dispatch {job.dispatch_id})")
        self.world.checks.on_participants(job.room, len(lk_room.agents()))
        return True

    def delete_if_uncalled(self, name: str, sid: str) -> None:
        """A worker's DeleteRoom for this room (this incarnation) when nobody but agents is in it."""
        lk_room = self.rooms.get(name)
        if lk_room is None or lk_room.sid != sid or any(k != "agent" for k in lk_room.participants.values()):
            return
        self.world.log("livekit", f"room {name} ({sid}) deleted by a worker: made for a stale dispatch")
        self.world.close_incarnation(name, sid)

    def leave(self, job: Job) -> None:
        """The agent disconnects by itself (its job ended)."""
        lk_room = self.rooms.get(job.room)
        if lk_room is not None and job.identity in lk_room.participants:
            del lk_room.participants[job.identity]
            self.world.log("livekit", f"{job.identity} left {job.room}")
            self.world.checks.on_participants(job.room, len(lk_room.agents()))
            self._empty(lk_room)

    def ghost(self, job: Job) -> None:
        """The agent's worker died: LiveKit keeps the silent participant for a while, then drops it."""

        def drop() -> None:
            lk_room = self.rooms.get(job.room)
            if lk_room is not None and lk_room.participants.get(job.identity) == "agent":
                del lk_room.participants[job.identity]
                self.world.log("livekit", f"{job.identity} dropped from {job.room} (its worker died)")
                self.world.checks.on_participants(job.room, len(lk_room.agents()))
                self._empty(lk_room)

        self.world.later(AGENT_GHOST_S, drop)

    def _drop(self, lk_room: LkRoom, identity: str, reason: str) -> None:
        kind = lk_room.participants.pop(identity)
        self.world.log("livekit", f"{identity} out of {lk_room.name}: {reason}")
        if kind == "agent":
            self.world.checks.on_participants(lk_room.name, len(lk_room.agents()))
            job = self.jobs.get(identity.removeprefix("agent-"))
            if job is not None:
                job.pool.agent_gone(job, reason)
        if self.rooms.get(lk_room.name) is lk_room:
            self._empty(lk_room)

    # -- ground truth for the checks ------------------------------------------------------------

    def agents_in(self, room: str) -> list[str]:
        lk_room = self.rooms.get(room)
        return lk_room.agents() if lk_room is not None else []

    def live_dispatch_with_key(self, room: str, key: str) -> Dispatch | None:
        lk_room = self.rooms.get(room)
        if lk_room is None:
            return None
        return next((d for d in lk_room.dispatches.values() if d.key == key and not d.deleted), None)


# Reads are not worth a line each in the interleaving; effects and their failures are (and the
# existence check before a dispatch).
_LOGGED = frozenset(
    {"create_dispatch", "delete_dispatch", "remove_participant", "find_dispatch", "room_info"}
)
