"""A cap on the ingest's open connections, in all and per client address.

The webhook port may face the internet. The timeouts (``ingest.body_read_timeout_s``,
``ingest.idle_timeout_s``) bound how long one connection is held; the caps bound how many: a
client over its share (``max_connections_per_client``) or a server over its total
(``max_connections``) has the new connection closed at once, before anything is read. Per address,
so one slow or hostile client cannot take the slots LiveKit's webhooks need (LiveKit sends from
its own few addresses, on pooled connections).

aiohttp has no such cap: the runner's server is wrapped where it learns of each new connection
(``web.Server.connection_made``, which every aiohttp request handler calls once).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from shared.logs import Throttled

log = logging.getLogger(__name__)


class CappedRunner(web.AppRunner):
    """An AppRunner whose server closes a connection over either cap as it is made."""

    def __init__(
        self,
        app: web.Application,
        *,
        max_connections: int,
        max_per_client: int,
        on_refused: Callable[[str], None] = lambda _why: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._max, self._max_per_client, self._on_refused = max_connections, max_per_client, on_refused
        self._per_client: Counter[str] = Counter()
        self._client_of: dict[RequestHandler, str] = {}
        self._said = Throttled(log)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if peer else "?"
            self._client_of[handler] = client
            self._per_client[client] += 1
            why = None
            if len(server.connections) > self._max:
                why = "max_connections"
            elif self._per_client[client] > self._max_per_client:
                why = "max_connections_per_client"
            if why is not None:
                self._on_refused(why)
                self._said.warn((why, client), "ingest: closed a connection from %s: over %s", client, why)
                transport.close()

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            client = self._client_of.pop(handler, None)
            if client is not None:
                self._per_client[client] -= 1
                if self._per_client[client] <= 0:
                    del self._per_client[client]
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        return server
