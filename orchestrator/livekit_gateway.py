"""The orchestrator's only door to LiveKit's server API: dispatches, rooms, participants.

livekit-api 1.2.2 applies no HTTP timeout of its own, so every call here runs under
``asyncio.timeout``; its own failover retries are switched off (they only apply to LiveKit Cloud
hosts anyway) so that retries are ours alone and bounded (see :mod:`orchestrator.dispatcher`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import aiohttp
from livekit import api as lk
from livekit.protocol.agent_dispatch import JobRestartPolicy

from orchestrator.livekit_tokens import LiveKitServices
from shared.dispatch_metadata import read_dispatch_metadata
from shared.settings import LiveKitSettings

T = TypeVar("T")


class LiveKitCallError(Exception):
    """A LiveKit API call failed. ``permanent``: retrying cannot help (credentials, bad argument,
    the thing is not there). ``ambiguous``: the request may have been applied (timeout after
    sending, dropped connection, a 5xx), so a non-idempotent call must be looked up before it is
    tried again. ``status``: the HTTP status when LiveKit (or a proxy in front of it) answered."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        permanent: bool,
        ambiguous: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent
        self.ambiguous = ambiguous
        self.status = status


# Twirp codes after which the request may have been applied (the server failed or gave up midway),
# with the reason each is reported under.
_AMBIGUOUS_CODES = {
    "unavailable": "unavailable",
    "internal": "unavailable",
    "unknown": "unavailable",
    "dataloss": "unavailable",
    "deadline_exceeded": "timeout",
    "canceled": "canceled",
    "aborted": "aborted",
}


def _classify_twirp(exc: lk.TwirpError, what: str) -> LiveKitCallError:
    status, code = exc.status, exc.code
    # livekit-api reports "unknown" when the body is not a Twirp error, as from a proxy in front of
    # LiveKit: then only the HTTP status means anything (408: the proxy gave up waiting for it).
    kind = code
    if code == "unknown" and status < 500:
        kind = "deadline_exceeded" if status == 408 else ""
    if status in (401, 403) or kind in ("unauthenticated", "permission_denied"):
        return LiveKitCallError(
            "unauthenticated",
            f"{what}: LiveKit rejected the API credentials (HTTP {status} {code}); "
            "check LIVEKIT_API_KEY / LIVEKIT_API_SECRET",
            permanent=True,
            status=status,
        )
    if status == 429 or kind == "resource_exhausted":
        # Refused before any work was done: not ambiguous.
        return LiveKitCallError(
            "unavailable",
            f"{what}: LiveKit is rate limiting this client (HTTP {status} {code})",
            permanent=False,
            status=status,
        )
    if kind == "not_found":
        return LiveKitCallError(
            "not_found",
            f"{what}: LiveKit does not know it: {code} (HTTP {status})",
            permanent=True,
            status=status,
        )
    if kind == "unimplemented":
        # A LiveKit without this service (too old, or not LiveKit): no retry will change that.
        return LiveKitCallError(
            "invalid_argument",
            f"{what}: LiveKit does not implement this call: {code} (HTTP {status})",
            permanent=True,
            status=status,
        )
    if kind in _AMBIGUOUS_CODES or status >= 500:
        return LiveKitCallError(
            _AMBIGUOUS_CODES.get(kind, "unavailable"),
            f"{what}: LiveKit answered HTTP {status} {code}",
            permanent=False,
            ambiguous=True,
            status=status,
        )
    # invalid_argument, malformed, out_of_range, failed_precondition, already_exists, bad_route...
    return LiveKitCallError(
        "invalid_argument",
        f"{what}: LiveKit refused the request: {code} (HTTP {status})",
        permanent=True,
        status=status,
    )


def classify(exc: BaseException, what: str) -> LiveKitCallError:
    """Map a livekit-api / aiohttp failure to a reason an operator can act on. Never includes secrets
    (nor LiveKit's free-text message, which may echo request fields)."""
    if isinstance(exc, LiveKitCallError):
        return exc
    if isinstance(exc, lk.TwirpError):
        return _classify_twirp(exc, what)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Never connected: the request was not sent, so not ambiguous.
        return LiveKitCallError(
            "unreachable", f"{what}: cannot connect to LiveKit ({exc.os_error})", permanent=False
        )
    if isinstance(exc, TimeoutError):
        return LiveKitCallError(
            "timeout", f"{what}: LiveKit did not answer in time", permanent=False, ambiguous=True
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return LiveKitCallError(
            "connection_lost",
            f"{what}: connection to LiveKit failed ({type(exc).__name__})",
            permanent=False,
            ambiguous=True,
        )
    return LiveKitCallError("unexpected", f"{what}: {type(exc).__name__}", permanent=False, ambiguous=True)


@dataclass(frozen=True, slots=True)
class DispatchJobs:
    count: int  # jobs LiveKit created for the dispatch
    identities: frozenset[str]  # participant identities of those jobs that have one


@dataclass(frozen=True, slots=True)
class ListedDispatch:
    """A dispatch as LiveKit lists it in a room, with what our metadata says of it."""

    id: str
    agent_name: str
    key: str | None  # our attempt key (None: not a dispatch of ours)
    sid: str | None  # the room it was made for (our metadata)
    identities: frozenset[str]  # participant identities of its jobs that have one


# The participant attribute livekit-agents' worker sets to its agent_name when it accepts a job
# (livekit.agents.types.ATTRIBUTE_AGENT_NAME in 1.8.9).
AGENT_NAME_ATTRIBUTE = "lk.agent.name"


@dataclass(frozen=True, slots=True)
class LiveRoom:
    """A room as LiveKit lists it (ListRooms)."""

    name: str
    sid: str | None
    created_at: float | None  # unix seconds
    metadata: str
    participants: int


def _job_identities(d: lk.AgentDispatch) -> frozenset[str]:
    """The participant identities of a dispatch's jobs that have one (a job joined its room)."""
    return frozenset(j.state.participant_identity for j in d.state.jobs if j.state.participant_identity)


def _live_room(r: lk.Room) -> LiveRoom:
    created_ms = r.creation_time_ms or r.creation_time * 1000
    return LiveRoom(
        name=r.name,
        sid=r.sid or None,
        created_at=created_ms / 1000 if created_ms else None,
        metadata=r.metadata,
        participants=r.num_participants,
    )


class LiveKitGateway:
    def __init__(self, settings: LiveKitSettings) -> None:
        self._settings = settings
        self._api: LiveKitServices | None = None

    async def __aenter__(self) -> LiveKitGateway:
        # Built inside the running loop (aiohttp session), as livekit-api requires.
        self._api = LiveKitServices.open(
            self._settings.url, self._settings.api_key, self._settings.api_secret.get_secret_value()
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    @property
    def api(self) -> LiveKitServices:
        if self._api is None:
            raise RuntimeError("LiveKitGateway used outside 'async with'")
        return self._api

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                return await call
        except Exception as exc:
            raise classify(exc, what) from None

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        req = lk.CreateAgentDispatchRequest(
            agent_name=agent_name,
            room=room,
            metadata=metadata,
            # Switchboard alone decides when a job is tried again (a redispatch, to a pool of its
            # choosing). LiveKit's default, JRP_ON_FAILURE, would let a deployment that honours it
            # restart a failed job on its own while Switchboard dispatches again: two agents.
            restart_policy=JobRestartPolicy.JRP_NEVER,
        )
        dispatch = await self._call("CreateDispatch", self.api.agent_dispatch.create_dispatch(req))
        return str(dispatch.id)

    async def _list_dispatch(self, room: str) -> list[lk.AgentDispatch] | None:
        """The room's dispatches; None when the room does not exist."""
        if not await self.room_exists(room):
            return None  # asked of LiveKit, a missing room costs seconds (see _room_gone)
        try:
            return await self._call("ListDispatch", self.api.agent_dispatch.list_dispatch(room_name=room))
        except LiveKitCallError as err:
            if await self._room_gone(err, room):
                return None
            raise

    async def _room_gone(self, err: LiveKitCallError, room: str) -> bool:
        """Whether ``err`` only says that ``room`` does not exist. LiveKit (1.13) answers ListDispatch
        and DeleteDispatch in a room no node hosts with 503 unavailable ("no response from servers",
        after ~3 s, or our timeout first), the same answer as an outage: ListRooms tells them apart.
        Callers look the room up before the call too; this covers a room that ended in between."""
        if err.reason not in ("unavailable", "timeout") or not err.ambiguous:
            return False
        try:
            return not await self.room_exists(room)
        except LiveKitCallError:
            return False  # LiveKit is really unavailable: the caller gets the original error

    async def find_dispatch(self, room: str, agent_name: str, key: str) -> str | None:
        """Our dispatch for this attempt, if an earlier (ambiguous) call did land."""
        dispatches = await self._list_dispatch(room)
        # No room: our CreateDispatch (which creates the room) never landed.
        for d in dispatches or []:
            if d.agent_name == agent_name:
                info = read_dispatch_metadata(d.metadata).info
                if info is not None and info.key == key:
                    return str(d.id)
        return None

    async def room_dispatches(self, room: str) -> list[ListedDispatch] | None:
        """Every dispatch LiveKit lists in ``room`` (one ListDispatch); None when the room does not exist."""
        listed = await self._list_dispatch(room)
        if listed is None:
            return None
        out: list[ListedDispatch] = []
        for d in listed:
            info = read_dispatch_metadata(d.metadata).info
            out.append(
                ListedDispatch(
                    id=str(d.id),
                    agent_name=d.agent_name,
                    key=info.key if info is not None else None,
                    sid=info.sid if info is not None else None,
                    identities=_job_identities(d),
                )
            )
        return out

    async def dispatch_jobs(self, room: str, dispatch_id: str) -> DispatchJobs | None:
        """The jobs LiveKit created for the dispatch (None: the dispatch, or its room, is not listed)."""
        for d in await self._list_dispatch(room) or []:
            if d.id == dispatch_id:
                return DispatchJobs(
                    count=len(d.state.jobs),
                    identities=_job_identities(d),
                )
        return None

    async def delete_dispatch(self, dispatch_id: str, room: str) -> None:
        """Delete the dispatch; one that is already gone (or whose room is) is fine."""
        if not await self.room_exists(room):
            return  # the room ended, and its dispatches with it
        try:
            await self._call("DeleteDispatch", self.api.agent_dispatch.delete_dispatch(dispatch_id, room))
        except LiveKitCallError as err:
            if err.reason == "not_found" or await self._room_gone(err, room):
                return
            raise

    async def remove_participant(self, room: str, identity: str) -> None:
        """Remove the participant; one that already left (or whose room is gone) is fine. LiveKit
        answers not_found for both."""
        req = lk.RoomParticipantIdentity(room=room, identity=identity)
        try:
            await self._call("RemoveParticipant", self.api.room.remove_participant(req))
        except LiveKitCallError as err:
            if err.reason != "not_found":
                raise

    async def _participant_infos(self, room: str) -> list[lk.ParticipantInfo] | None:
        req = lk.ListParticipantsRequest(room=room)
        listed = await self._call("ListParticipants", self.api.room.list_participants(req))
        if listed.participants:
            return list(listed.participants)
        # LiveKit lists a room that does not exist as empty: ask whether it exists.
        return [] if await self.room_exists(room) else None

    async def participants(self, room: str) -> frozenset[str] | None:
        """Identities of the participants now in ``room``; None when the room does not exist."""
        infos = await self._participant_infos(room)
        return None if infos is None else frozenset(p.identity for p in infos)

    async def roster(self, room: str) -> dict[str, str | None] | None:
        """Who is in ``room``: each participant's identity with, for an agent, the ``agent_name`` it
        joined under (livekit-agents sets the ``lk.agent.name`` attribute on accepting a job; "" when
        an agent has none), and None for anyone else. None when the room does not exist."""
        infos = await self._participant_infos(room)
        if infos is None:
            return None
        return {
            p.identity: p.attributes.get(AGENT_NAME_ATTRIBUTE, "")
            if p.kind == lk.ParticipantInfo.Kind.AGENT
            else None
            for p in infos
        }

    async def callers(self, room: str) -> frozenset[str] | None:
        """Identities of the participants in ``room`` that are not agents or egress (users, SIP
        callers, ingress); None when the room does not exist."""
        infos = await self._participant_infos(room)
        if infos is None:
            return None
        machines = (lk.ParticipantInfo.Kind.AGENT, lk.ParticipantInfo.Kind.EGRESS)
        return frozenset(p.identity for p in infos if p.kind not in machines)

    async def room_exists(self, room: str) -> bool:
        return await self.room_info(room) is not None

    async def room_info(self, room: str) -> LiveRoom | None:
        """The room as LiveKit lists it now; None when LiveKit has no room of that name."""
        rooms = await self._call("ListRooms", self.api.room.list_rooms(lk.ListRoomsRequest(names=[room])))
        return next((_live_room(r) for r in rooms.rooms if r.name == room), None)

    async def list_rooms(self) -> list[LiveRoom]:
        """Every room LiveKit has (one ListRooms; its cost grows with the rooms, see bench)."""
        rooms = await self._call("ListRooms", self.api.room.list_rooms(lk.ListRoomsRequest()))
        return [_live_room(r) for r in rooms.rooms]

    async def check_credentials(self) -> None:
        """A harmless authenticated call (used by readiness and doctor)."""
        await self._call(
            "ListRooms", self.api.room.list_rooms(lk.ListRoomsRequest(names=["switchboard-probe"]))
        )
