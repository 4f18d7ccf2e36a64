"""The HTTP side of the ingest: verify, parse, translate, publish — and answer with a status code
that makes LiveKit do the right thing.

LiveKit (livekit/protocol ``webhook/resource_url_notifier.go``, used by livekit-server v1.13.5)
POSTs each event with hashicorp go-retryablehttp: connection errors and 5xx (and 429) are retried
— 4 retries, 1 s to 30 s backoff — while 4xx are final. Events wait in a per-room queue of at most
200 and are dropped once 30 s old. So:

- 401: no or bad signature (final: a forged request must not be retried into the stream); every
  401 has the same body, so a caller learns nothing of which check failed (the log says);
- 408: the body did not arrive within ``body_read_timeout_s`` (a slow client holds nothing long);
- 400: signed but malformed body / not a room event we can represent (final: retrying cannot help);
- 413: body over the cap (final);
- 503: NATS/JetStream unavailable or slow — LiveKit retries, and the JetStream dedupe id (room
  sid) makes a retry of a publish that did land harmless;
- 200: published, or an event we do not use (ignored, logged at debug).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from google.protobuf.json_format import ParseError
from livekit import api as lk
from livekit.protocol.webhook import WebhookEvent
from opentelemetry.metrics import Meter

from orchestrator.ingest.translate import BadEvent, translate
from shared.codec import ContractError
from shared.logs import log_context
from shared.messages import RoomCreated, RoomEnded

log = logging.getLogger(__name__)

Publish = Callable[[RoomCreated | RoomEnded], Awaitable[None]]
Ready = Callable[[], bool]
# Counts one webhook: outcome (published, ignored, refused) and its event type or refusal reason.
Count = Callable[[str, str], None]


class Unavailable(RuntimeError):
    """The bus cannot take the event now (answered 503, so LiveKit retries)."""


@dataclass(frozen=True, slots=True)
class IngestOptions:
    api_key: str
    api_secret: str
    default_region: str
    path: str = "/webhook"
    max_body_bytes: int = 256 * 1024
    publish_timeout_s: float = 3.0
    body_read_timeout_s: float = 10.0


def build_app(
    options: IngestOptions, publish: Publish, ready: Ready, count: Count | None = None
) -> web.Application:
    # client_max_size makes aiohttp refuse a larger body with 413 while reading it, before we hold it.
    app = web.Application(client_max_size=options.max_body_bytes)
    handler = WebhookHandler(options, publish, ready, count or _uncounted)
    app.add_routes(
        [
            web.post(options.path, handler.handle),
            web.get("/healthz", _healthz),
            web.get("/readyz", handler.readyz),
        ]
    )
    return app


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _uncounted(outcome: str, reason: str) -> None:
    pass


def webhook_counter(meter: Meter) -> Count:
    """``switchboard_webhooks_total{outcome, reason}``: every webhook, by what became of it."""
    webhooks = meter.create_counter(
        "switchboard.webhooks",
        description="LiveKit webhooks by outcome (published, ignored, refused) and event or reason",
    )
    return lambda outcome, reason: webhooks.add(1, {"outcome": outcome, "reason": reason})


class WebhookHandler:
    def __init__(self, options: IngestOptions, publish: Publish, ready: Ready, count: Count) -> None:
        self._options = options
        self._publish = publish
        self._ready = ready
        self._count = count
        self._receiver = lk.WebhookReceiver(lk.TokenVerifier(options.api_key, options.api_secret))

    async def readyz(self, _: web.Request) -> web.Response:
        ok = self._ready()
        return web.json_response({"nats": "connected" if ok else "unavailable"}, status=200 if ok else 503)

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self._options.max_body_bytes:
            return self._refuse(413, "body too large", f"limit is {self._options.max_body_bytes} bytes")
        auth = request.headers.get("Authorization", "")
        if not auth:
            return self._refuse(401, "missing signature", "no Authorization header")
        try:
            async with asyncio.timeout(self._options.body_read_timeout_s):
                body = await request.read()  # raises HTTPRequestEntityTooLarge (413) past client_max_size
        except TimeoutError:
            limit = self._options.body_read_timeout_s
            return self._refuse(408, "body too slow", f"not received in {limit:g}s")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(400, "malformed body", "not UTF-8")
        event = self._verify(text, auth)
        if isinstance(event, web.Response):
            return event
        try:
            translation = translate(event, self._options.default_region)
        except BadEvent as err:
            return self._refuse(400, "unusable event", str(err))
        message = translation.message
        if message is None:
            log.debug("webhook %s ignored", event.event or "(no event type)")
            self._count("ignored", event.event or "none")
            return web.json_response({"status": "ignored", "event": event.event})
        with log_context(room=message.room):
            if translation.note:
                log.warning("webhook %s: %s", event.event, translation.note)
            if not self._ready():
                return self._refuse(503, "NATS unavailable", "not connected; LiveKit will retry")
            try:
                async with asyncio.timeout(self._options.publish_timeout_s):
                    await self._publish(message)
            except ContractError as err:
                return self._refuse(400, "unusable event", str(err))
            except (TimeoutError, Unavailable) as err:
                return self._refuse(503, "NATS unavailable", str(err) or "publish timed out")
            except Exception as err:  # nats-py raises a zoo of errors when the server goes away
                return self._refuse(503, "NATS unavailable", f"{type(err).__name__}: {err}")
            log.info("webhook %s published as %s", event.event, type(message).__name__)
            self._count("published", event.event)
        return web.json_response({"status": "published", "event": event.event})

    def _verify(self, text: str, auth: str) -> WebhookEvent | web.Response:
        try:
            return self._receiver.receive(text, auth)
        except ParseError:
            return self._refuse(400, "malformed body", "not a LiveKit webhook event")
        except Exception as err:  # PyJWT errors, "hash mismatch", "sha256 was not found"
            # The reason names the check, never the token or the secret.
            return self._refuse(401, "bad signature", str(err)[:200] or type(err).__name__)

    def _refuse(self, status: int, what: str, why: str) -> web.Response:
        level = logging.WARNING if status != 503 else logging.ERROR
        log.log(level, "webhook refused (%d %s): %s", status, what, why)
        self._count("refused", what.replace(" ", "_"))
        if status == 401:
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"error": what, "detail": why}, status=status)
