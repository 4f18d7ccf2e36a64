"""Messages of a durable pull consumer as they are published, with pull requests kept outstanding
(what nats.go's ``Consume`` does; nats-py has no such helper).

nats-py's ``fetch`` sends a pull request per call and gives up on it client-side when its timeout
runs out, while the server may still hold that request: an orphaned request then takes the next
message, and the fetch after it returns only once a *second* message arrives. Measured on a replica
after an idle second (bench section 9): every other event waited for the next one, ~10 ms at
100 events/s, for a second or more — the p99 of a whole run. Here one subscription holds at most
``batch`` messages requested at any time, re-requested when half have arrived, each request
living ``expires_s`` with the server's idle heartbeats every ``heartbeat_s``: silence for two
heartbeats (a reconnect lost the server's side of the requests) starts over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

log = logging.getLogger(__name__)

# Status codes the server sends on the request's inbox (as headers of an empty message).
_HEARTBEAT = "100"
_EXPIRED = "408"  # a request's expiry: its unfilled count is given back
_PENDING = "Nats-Pending-Messages"
# After a request ended otherwise (409: a leader change, a deleted consumer; 503: no JetStream),
# the next one waits this long: a server that refuses every request is not asked in a tight loop.
PAUSE_S = 0.5


class Puller:
    def __init__(
        self,
        nc: NATS,
        stream: str,
        durable: str,
        *,
        batch: int = 64,
        expires_s: float = 30.0,
        heartbeat_s: float = 1.0,
        api_prefix: str = "$JS.API",
    ) -> None:
        self.nc = nc
        self.batch = batch
        self.expires_s = expires_s
        self.heartbeat_s = heartbeat_s
        self._next = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._sub: Subscription | None = None
        self._inbox = ""
        self._outstanding = 0  # messages requested and not yet delivered
        self._heard = time.monotonic()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._pause_until = 0.0
        self._refused: str | None = None  # the last refusal logged (logged again once it changes)

    @classmethod
    def of(cls, js: JetStreamContext, stream: str, durable: str, *, batch: int = 64) -> Puller:
        """On the connection ``js`` was made on, with its API prefix (a JetStream domain changes
        it); nats-py keeps both private."""
        nc: NATS = js._nc
        return cls(nc, stream, durable, batch=batch, api_prefix=str(getattr(js, "_prefix", "$JS.API")))

    async def __aenter__(self) -> Puller:
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._arrived)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as err:  # the connection is closing or gone: nothing to undo
                log.debug("pull inbox unsubscribe: %r", err)

    async def _arrived(self, msg: Msg) -> None:
        # At most what was requested (2 × batch across a start-over) plus statuses: bounded.
        self._queue.put_nowait(msg)

    async def next(self) -> list[Msg]:
        """The messages delivered so far (at least one), as soon as one is: waits as long as it
        takes, keeping requests outstanding and starting over after a silence."""
        assert self._sub is not None, "use Puller as an async context manager"
        while True:
            pause = self._pause_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            await self._top_up()
            try:
                async with asyncio.timeout(2 * self.heartbeat_s):
                    first = await self._queue.get()
            except TimeoutError:
                if time.monotonic() - self._heard >= 2 * self.heartbeat_s:
                    # Neither a message nor a heartbeat: the server no longer holds our requests
                    # (a reconnect, a restarted server). Ask afresh.
                    self._outstanding = 0
                continue
            msgs = self._take(first)
            while len(msgs) < self.batch and not self._queue.empty():
                msgs += self._take(self._queue.get_nowait())
            if msgs:
                return msgs

    def _take(self, msg: Msg) -> list[Msg]:
        self._heard = time.monotonic()
        status = (msg.headers or {}).get("Status") if not msg.data else None
        if status is None:
            self._outstanding = max(0, self._outstanding - 1)
            self._refused = None
            return [msg]
        if status == _EXPIRED:
            given_back = (msg.headers or {}).get(_PENDING)
            self._outstanding = max(0, self._outstanding - int(given_back)) if given_back else 0
        elif status != _HEARTBEAT:  # the request ended otherwise
            refused = f"{status} {(msg.headers or {}).get('Description', '')}".strip()
            if refused != self._refused:
                log.warning("pull request on %s refused: %s; asking again", self._next, refused)
                self._refused = refused
            self._outstanding = 0
            self._pause_until = time.monotonic() + PAUSE_S
        return []

    async def _top_up(self) -> None:
        """Request up to ``batch`` messages once fewer than half are outstanding."""
        want = self.batch - self._outstanding
        if want < self.batch // 2 and self._outstanding:
            return
        request = {
            "batch": want,
            "expires": int(self.expires_s * 1e9),
            "idle_heartbeat": int(self.heartbeat_s * 1e9),
        }
        await self.nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
        self._outstanding += want
        self._heard = time.monotonic()
