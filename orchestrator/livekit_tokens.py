"""LiveKit server API clients that reuse their signed tokens.

livekit-api signs a fresh JWT for every call (``Service._auth_header``): ~90 µs of HMAC and
dataclass copying, a tenth of a replica's CPU per dispatched room (profile in bench/REPORT.md,
issue 15), for tokens whose grants repeat — ListRooms always asks ``room_list``, and a room's calls
all ask ``room_admin`` on that room. Here a token is signed for :data:`TOKEN_TTL` and reused for
:data:`REUSE_S` of it, per set of grants, in a bounded map. Tokens live only in this process's
memory, like the secret they are signed with; they are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
from livekit import api as lk
from livekit.api.agent_dispatch_service import AgentDispatchService as _AgentDispatchService
from livekit.api.room_service import RoomService as _RoomService

# A token is valid this long; reused while it has at least TOKEN_TTL - REUSE_S left, so a request
# in flight (or a LiveKit clock a little behind ours) never meets an expired one.
TOKEN_TTL = timedelta(minutes=10)
REUSE_S = 300.0
# Sets of grants kept: one per room with calls in the last REUSE_S, and ListRooms'. A full map
# drops its oldest token (signed again on next use).
MAX_TOKENS = 8192


class TokenCache:
    def __init__(
        self,
        api_key: str,
        api_secret: str,
        clock: Callable[[], float] = time.monotonic,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        self._key = api_key
        self._secret = api_secret
        self._clock = clock
        self._max = max_tokens
        self._tokens: dict[str, tuple[float, str]] = {}  # grants -> (signed at, token); oldest first

    def header(self, grants: lk.VideoGrants) -> dict[str, str]:
        key = repr(grants)  # a flat dataclass: its repr names every grant
        now = self._clock()
        got = self._tokens.get(key)
        if got is None or now - got[0] >= REUSE_S:
            token = lk.AccessToken(self._key, self._secret).with_grants(grants).with_ttl(TOKEN_TTL).to_jwt()
            self._tokens.pop(key, None)  # re-inserted last: the map stays in signing order
            if len(self._tokens) >= self._max:
                del self._tokens[next(iter(self._tokens))]
            got = self._tokens[key] = (now, token)
        return {"authorization": f"Bearer {got[1]}"}

    def __len__(self) -> int:
        return len(self._tokens)


class _CachedAuth:
    """Mixed in before a livekit-api service: its calls take their tokens from a :class:`TokenCache`
    (SIP grants, which we never ask, still go the library's way)."""

    tokens: TokenCache

    def _auth_header(self, grants: lk.VideoGrants | None, sip: lk.SIPGrants | None = None) -> dict[str, str]:
        if grants is None or sip is not None:
            return super()._auth_header(grants, sip)  # type: ignore[misc, no-any-return]
        return self.tokens.header(grants)


class RoomService(_CachedAuth, _RoomService):
    def __init__(
        self, session: aiohttp.ClientSession, url: str, api_key: str, api_secret: str, tokens: TokenCache
    ) -> None:
        super().__init__(session, url, api_key, api_secret, False)
        self.tokens = tokens


class AgentDispatchService(_CachedAuth, _AgentDispatchService):
    def __init__(
        self, session: aiohttp.ClientSession, url: str, api_key: str, api_secret: str, tokens: TokenCache
    ) -> None:
        super().__init__(session, url, api_key, api_secret, False)
        self.tokens = tokens


@dataclass(frozen=True, slots=True)
class LiveKitServices:
    """The two services the orchestrator calls, on one HTTP session (failover off: retries are ours)."""

    room: RoomService
    agent_dispatch: AgentDispatchService
    session: aiohttp.ClientSession

    @classmethod
    def open(cls, url: str, api_key: str, api_secret: str) -> LiveKitServices:
        # livekit-api's own default: 10 s for a whole request (ours, shorter, wrap each call).
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        tokens = TokenCache(api_key, api_secret)
        return cls(
            RoomService(session, url, api_key, api_secret, tokens),
            AgentDispatchService(session, url, api_key, api_secret, tokens),
            session,
        )

    async def aclose(self) -> None:
        await self.session.close()
