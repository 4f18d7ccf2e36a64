"""The orchestrator's only door to LiveKit's server API: dispatches, rooms, participants.

livekit-api 1.2.2 applies no HTTP timeout of its own, so every call here runs under
``asyncio.timeout``; its own failover retries are switched off (they only apply to LiveKit Cloud
hosts anyway) so that retries are ours alone and bounded (see :mod:`orchestrator.dispatcher`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import TypeVar

import aiohttp
from livekit import api as lk

from shared.dispatch_metadata import read_dispatch_metadata
from shared.settings import LiveKitSettings

T = TypeVar("T")


class LiveKitCallError(Exception):
    """A LiveKit API call failed. ``permanent``: retrying cannot help (credentials, bad argument).
    ``ambiguous``: the request may have been applied (timeout after sending, dropped connection)."""

    def __init__(self, reason: str, message: str, *, permanent: bool, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent
        self.ambiguous = ambiguous


def classify(exc: BaseException, what: str) -> LiveKitCallError:
    """Map a livekit-api / aiohttp failure to a reason an operator can act on. Never includes secrets."""
    if isinstance(exc, LiveKitCallError):
        return exc
    if isinstance(exc, lk.TwirpError):
        status, code = exc.status, exc.code
        if status in (401, 403) or code in ("unauthenticated", "permission_denied"):
            return LiveKitCallError(
                "unauthenticated",
                f"{what}: LiveKit rejected the API credentials (HTTP {status} {code}); "
                "check LIVEKIT_API_KEY / LIVEKIT_API_SECRET",
                permanent=True,
            )
        if status >= 500 or status == 429 or code in ("unavailable", "internal", "resource_exhausted"):
            return LiveKitCallError(
                "unavailable", f"{what}: LiveKit answered HTTP {status} {code}", permanent=False
            )
        return LiveKitCallError(
            "invalid_argument", f"{what}: LiveKit refused the request: {code} (HTTP {status})", permanent=True
        )
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


class LiveKitGateway:
    def __init__(self, settings: LiveKitSettings) -> None:
        self._settings = settings
        self._api: lk.LiveKitAPI | None = None

    async def __aenter__(self) -> LiveKitGateway:
        # Built inside the running loop (aiohttp session), as livekit-api requires.
        self._api = lk.LiveKitAPI(
            self._settings.url,
            self._settings.api_key,
            self._settings.api_secret.get_secret_value(),
            failover=False,
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    @property
    def api(self) -> lk.LiveKitAPI:
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
        req = lk.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
        dispatch = await self._call("CreateDispatch", self.api.agent_dispatch.create_dispatch(req))
        return str(dispatch.id)

    async def find_dispatch(self, room: str, agent_name: str, key: str) -> str | None:
        """Our dispatch for this attempt, if an earlier (ambiguous) call did land."""
        # ListDispatch on a missing room answers 503; no room means our CreateDispatch never landed.
        if not await self.room_exists(room):
            return None
        dispatches = await self._call("ListDispatch", self.api.agent_dispatch.list_dispatch(room_name=room))
        for d in dispatches:
            if d.agent_name == agent_name:
                info = read_dispatch_metadata(d.metadata).info
                if info is not None and info.key == key:
                    return str(d.id)
        return None

    async def dispatch_jobs(self, room: str, dispatch_id: str) -> int | None:
        """How many jobs LiveKit created for the dispatch (None: the dispatch is not listed)."""
        dispatches = await self._call("ListDispatch", self.api.agent_dispatch.list_dispatch(room_name=room))
        for d in dispatches:
            if d.id == dispatch_id:
                return len(d.state.jobs)
        return None

    async def delete_dispatch(self, dispatch_id: str, room: str) -> None:
        try:
            await self._call("DeleteDispatch", self.api.agent_dispatch.delete_dispatch(dispatch_id, room))
        except LiveKitCallError as err:
            if err.reason != "invalid_argument":  # already gone (not found) is fine
                raise

    async def remove_participant(self, room: str, identity: str) -> None:
        req = lk.RoomParticipantIdentity(room=room, identity=identity)
        try:
            await self._call("RemoveParticipant", self.api.room.remove_participant(req))
        except LiveKitCallError as err:
            if err.reason != "invalid_argument":
                raise

    async def room_exists(self, room: str) -> bool:
        rooms = await self._call("ListRooms", self.api.room.list_rooms(lk.ListRoomsRequest(names=[room])))
        return any(r.name == room for r in rooms.rooms)

    async def check_credentials(self) -> None:
        """A harmless authenticated call (used by readiness and doctor)."""
        await self._call(
            "ListRooms", self.api.room.list_rooms(lk.ListRoomsRequest(names=["switchboard-probe"]))
        )
