"""Two small HTTP relays for the lifecycle drills (tests/drills/test_drills_lifecycle.py), both on
127.0.0.1 and both real HTTP servers in the test's own event loop:

- :class:`WebhookRelay` sits between livekit-server's webhook notifier and ``switchboard ingest``.
  LiveKit is configured with the relay's URL (it must be known before LiveKit starts); the relay
  forwards every request to its current ``target`` byte for byte, headers included (the ingest
  checks the signature over the body), and answers with the ingest's answer. A drill makes it lose
  chosen events: :meth:`WebhookRelay.drop` takes a predicate on (event, room name); a dropped event
  is answered ``200`` and never forwarded, as a webhook that LiveKit's notifier dropped (queue full,
  30 s age) never arrives. With no ``target`` (or the ingest stopped) it answers ``502``, as a
  stopped ingest behind a load balancer.
- :class:`ApiGate` sits between the orchestrator and livekit-server's API (Twirp over HTTP/1.1) and
  can *hold* the requests of chosen methods (e.g. ``CreateDispatch``) before livekit-server sees
  them, until released: "the request is in flight" made exact. Everything else is forwarded as is.

Both record what passed, so a drill can assert on it (``seen``, ``held``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from google.protobuf.message import DecodeError, Message
from livekit import api as lkapi

from devstack.ports import free_tcp_port

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp sets itself: never copied across.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def _copy_headers(headers: Any, *, body_decoded: bool) -> dict[str, str]:
    """``body_decoded``: the body is passed on decoded (aiohttp's server decodes a request's
    Content-Encoding), so that header must not follow it; an answer is read raw and keeps it."""
    drop = _HOP | {"content-encoding"} if body_decoded else _HOP
    return {k: v for k, v in headers.items() if k.lower() not in drop}


@dataclass(frozen=True)
class Relayed:
    """One webhook request as the relay handled it."""

    at: float  # wall time
    event: str | None
    room: str | None
    sid: str | None
    outcome: str  # "forwarded <status>", "dropped", "no target", "unreachable"


class _Server:
    """An aiohttp server on 127.0.0.1 (a free port unless given), started and stopped by async with."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "not started"
        return self._session

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        if not self.port:
            self.port = free_tcp_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None


class WebhookRelay(_Server):
    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.target: str | None = None  # the ingest's webhook URL; None: nothing behind the relay
        self.seen: list[Relayed] = []
        self._drop: Callable[[str | None, str | None], bool] = lambda _e, _r: False
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    async def __aenter__(self) -> WebhookRelay:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def drop(self, predicate: Callable[[str | None, str | None], bool]) -> None:
        """Lose every event for which ``predicate(event, room)`` is true (from now on)."""
        self._drop = predicate

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        return app

    def outcomes(self, event: str, rooms: set[str] | None = None) -> Counter[str]:
        """What became of ``event`` webhooks (of ``rooms``): outcome -> count."""
        return Counter(
            r.outcome.split()[0] for r in self.seen if r.event == event and (rooms is None or r.room in rooms)
        )

    async def wait_for(
        self, match: Callable[[list[Relayed]], bool], within_s: float, what: str = "webhooks"
    ) -> None:
        """Until ``match(self.seen)`` holds (woken by each request), or fail after ``within_s``."""
        try:
            async with asyncio.timeout(within_s), self._changed:
                await self._changed.wait_for(lambda: match(self.seen))
        except TimeoutError:
            tail = [(r.event, r.room, r.outcome) for r in self.seen[-20:]]
            raise AssertionError(f"{what}: not within {within_s}s; last seen {tail}") from None

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        event, room, sid = _describe(body)
        outcome: str
        response: web.StreamResponse
        if self._drop(event, room):
            outcome, response = "dropped", web.Response(status=200)
        elif self.target is None:
            outcome, response = "no target", web.Response(status=502, text="no ingest behind the relay")
        else:
            try:
                async with self.session.post(
                    self.target, data=body, headers=_copy_headers(request.headers, body_decoded=True)
                ) as up:
                    answer = await up.read()
                    outcome = f"forwarded {up.status}"
                    response = web.Response(
                        status=up.status, body=answer, headers=_copy_headers(up.headers, body_decoded=False)
                    )
            except (aiohttp.ClientError, TimeoutError, OSError):
                outcome, response = "unreachable", web.Response(status=502, text="ingest unreachable")
        async with self._changed:
            self.seen.append(Relayed(time.time(), event, room, sid, outcome))
            self._changed.notify_all()
        return response


def _describe(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(event, room name, room sid) of a webhook body; Nones when it is not such JSON."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    found = data.get("room")
    room: dict[str, Any] = found if isinstance(found, dict) else {}
    event = data.get("event")
    return (
        event if isinstance(event, str) else None,
        room.get("name") if isinstance(room.get("name"), str) else None,
        room.get("sid") if isinstance(room.get("sid"), str) else None,
    )


# The Twirp methods whose request names one room, and the request's type (the SDK sends protobuf).
_REQUESTS: dict[str, type[Message]] = {
    "CreateDispatch": lkapi.CreateAgentDispatchRequest,
    "ListDispatch": lkapi.ListAgentDispatchRequest,
    "DeleteDispatch": lkapi.DeleteAgentDispatchRequest,
    "ListParticipants": lkapi.ListParticipantsRequest,
    "RemoveParticipant": lkapi.RoomParticipantIdentity,
    "DeleteRoom": lkapi.DeleteRoomRequest,
}


def _room_of(method: str, body: bytes) -> str | None:
    """The room a Twirp request names (protobuf or JSON body); ListRooms: its one name, if one."""
    if not body:
        return None
    with contextlib.suppress(ValueError, RecursionError):
        data = json.loads(body)
        if isinstance(data, dict):
            room = data.get("room")
            return room if isinstance(room, str) else None
    if method == "ListRooms":
        rooms = lkapi.ListRoomsRequest()
        with contextlib.suppress(DecodeError):
            rooms.ParseFromString(body)
            return rooms.names[0] if len(rooms.names) == 1 else None
        return None
    kind = _REQUESTS.get(method)
    if kind is None:
        return None
    message = kind()
    with contextlib.suppress(DecodeError):
        message.ParseFromString(body)
        room = getattr(message, "room", None)
        return room if isinstance(room, str) and room else None
    return None


@dataclass
class Held:
    """A request held at the gate: its method, the room named in its body, when it arrived, and
    when it was let through (None while held)."""

    method: str
    room: str | None
    arrived: float
    released: float | None = None


class ApiGate(_Server):
    """A reverse proxy for livekit-server's Twirp API that holds chosen requests until released."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.calls: Counter[str] = Counter()  # Twirp method -> requests forwarded
        self.held: list[Held] = []
        self._hold: Callable[[str, str | None], bool] = lambda _m, _r: False
        self._hold_answer = False
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ApiGate:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._open.set()
        await self.stop()

    def hold(self, predicate: Callable[[str, str | None], bool], *, answer: bool = False) -> None:
        """From now on, hold every request for which ``predicate(method, room)`` is true: before
        livekit-server sees it, or (``answer``) after livekit-server did it, holding its answer."""
        self._hold = predicate
        self._hold_answer = answer
        self._open.clear()

    def release(self) -> None:
        """Let the held requests (and every later one) through."""
        self._hold = lambda _m, _r: False
        self._open.set()

    async def wait_held(self, count: int, within_s: float) -> list[Held]:
        try:
            async with asyncio.timeout(within_s), self._changed:
                await self._changed.wait_for(lambda: sum(1 for h in self.held if h.released is None) >= count)
        except TimeoutError:
            raise AssertionError(
                f"no {count} held request(s) within {within_s}s; calls so far {dict(self.calls)}"
            ) from None
        return [h for h in self.held if h.released is None]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        method = request.path.rsplit("/", 1)[-1]
        room = _room_of(method, body)
        held = Held(method, room, time.time()) if self._hold(method, room) else None
        if held is not None and not self._hold_answer:
            await self._wait_open(held)  # the fault: the request is in flight, LiveKit has not seen it
        self.calls[method] += 1
        try:
            async with self.session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body,
                headers=_copy_headers(request.headers, body_decoded=True),
            ) as up:
                answer = await up.read()
                status, headers = up.status, _copy_headers(up.headers, body_decoded=False)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return web.Response(status=502, text="livekit unreachable")
        if held is not None and self._hold_answer:
            await self._wait_open(held)  # the fault: LiveKit did it, its answer is in flight
        return web.Response(status=status, body=answer, headers=headers)

    async def _wait_open(self, held: Held) -> None:
        async with self._changed:
            self.held.append(held)
            self._changed.notify_all()
        await self._open.wait()
        held.released = time.time()
