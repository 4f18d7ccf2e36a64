"""NATS plumbing both sides use: a bounded connect, the stream layouts, and the publish helpers.

Business logic stays out: this module knows subjects, headers and trace context, not rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, Placement, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared import subjects
from shared.codec import MAX_MESSAGE_BYTES, encode
from shared.messages import AgentStatus, Message, RoomCreated, RoomEnded
from shared.settings import NatsSettings
from shared.tracecontext import inject_headers

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("switchboard.bus")

StateCallback = Callable[[str], Awaitable[None]]


class NatsUnavailableError(RuntimeError):
    """NATS could not be reached within the start-up bound; the message names URL and cause."""


async def connect(settings: NatsSettings, name: str, on_state: StateCallback | None = None) -> NATS:
    """Connect with a bounded start-up, then reconnect forever.

    nats-py's defaults block about two minutes on an unreachable server before failing (60
    attempts x 2 s). We try ``startup_attempts`` times, 1 s apart, and raise a clear error; once
    connected, the client reconnects without limit and replays subscriptions.
    """
    errors_seen: list[BaseException] = []

    async def error_cb(exc: Exception) -> None:
        errors_seen.append(exc)
        log.warning("nats: %s", _describe(exc))

    async def disconnected_cb() -> None:
        # Our own close() (a CLI command's normal end, a drained shutdown) is no news.
        if nc.is_closed:
            log.debug("nats: closed")
        else:
            log.warning("nats: disconnected")
        if on_state:
            await on_state("disconnected")

    async def reconnected_cb() -> None:
        log.info("nats: reconnected")
        if on_state:
            await on_state("connected")

    nc = NATS()
    # nats-py bounds its attempts, but not every failure ends them: a server certificate that fails
    # verification leaves connect() waiting forever. So the whole start-up has a deadline too.
    connect_timeout = max(1, round(settings.connect_timeout_s))
    bound_s = settings.startup_attempts * (connect_timeout + 1.0) + len(settings.servers) * connect_timeout
    try:
        async with asyncio.timeout(bound_s):
            await nc.connect(
                servers=settings.servers,
                name=name,
                connect_timeout=connect_timeout,
                reconnect_time_wait=1,
                max_reconnect_attempts=settings.startup_attempts,
                ping_interval=5,
                max_outstanding_pings=2,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                inbox_prefix=settings.inbox_prefix,
                **_auth_options(settings),
            )
    except Exception as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        # An authorization violation says what to fix; a reset that follows it says nothing.
        auth = [e for e in errors_seen if "authorization violation" in str(e).lower()]
        cause = auth[0] if auth else (errors_seen[-1] if errors_seen else exc)
        why = _describe(cause)
        if auth:  # name what to check for this client's kind of credentials (variables, never values)
            from shared.nats_credentials import refused_hint  # bcrypt, nkeys: only on this path

            why = f"authorization violation: {refused_hint(settings)}"
        raise NatsUnavailableError(
            f"cannot connect to NATS at {', '.join(_redact_url(u) for u in settings.servers)} after "
            f"{settings.startup_attempts} attempts: {why}"
        ) from None
    # Connected: from now on never give up reconnecting (nats-py reads this option on each loss).
    nc.options["max_reconnect_attempts"] = -1
    if on_state:
        await on_state("connected")
    return nc


async def close(nc: NATS, timeout_s: float = 3.0) -> None:
    """End a connection for good, within ``timeout_s``, whatever the server's state; never raises.

    Connected: drain, so pending publishes and acks reach the server. Reconnecting or gone: just
    close (nats-py's drain raises then, and a shutdown must not end in a traceback)."""
    if nc.is_closed:
        return
    try:
        async with asyncio.timeout(timeout_s):
            if nc.is_connected:
                try:
                    await nc.drain()
                    return
                except Exception as exc:  # the server went away mid-drain: nothing left to flush
                    log.debug("nats drain: %s", exc)
            await nc.close()
    except Exception as exc:  # a close stuck on a dead socket: the process is leaving anyway
        log.debug("nats close: %s", exc)


def _auth_options(settings: NatsSettings) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if settings.user:
        opts["user"] = settings.user
    if settings.password:
        opts["password"] = settings.password.get_secret_value()
    if settings.token:
        opts["token"] = settings.token.get_secret_value()
    if settings.creds_file:
        opts["user_credentials"] = str(settings.creds_file)
    if settings.nkey_seed_file:
        opts["nkeys_seed"] = str(settings.nkey_seed_file)
    if settings.tls_ca_file or settings.tls_cert_file:
        ctx = ssl.create_default_context(cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None)
        if settings.tls_cert_file:
            ctx.load_cert_chain(
                str(settings.tls_cert_file), str(settings.tls_key_file or settings.tls_cert_file)
            )
        opts["tls"] = ctx
    return opts


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "authorization violation" in text.lower():
        return "authorization violation (check NATS_USER/NATS_PASSWORD/NATS_NKEY_SEED_FILE/NATS_CREDS_FILE)"
    if "permissions violation for subscription" in text.lower() and "_inbox" in text.lower():
        return f"{text} (replies are refused: set NATS_INBOX_PREFIX to the prefix this user may read)"
    return text


def _redact_url(url: str) -> str:
    # nats://user:pass@host -> nats://***@host
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


def placement(cell: subjects.Cell) -> Placement | None:
    """A regional cell's streams and buckets live in its region's NATS cluster (the cluster named
    like the region), so a cut gateway leaves the region its own state."""
    return None if cell.placement_cluster is None else Placement(cluster=cell.placement_cluster)


def rooms_stream_config(replicas: int = 1, cell: subjects.Cell = subjects.SHARED) -> StreamConfig:
    # Work queue: one shared durable consumer takes each event once; acked events are removed.
    # The dedupe window covers webhook retries and LiveKit re-firing room_started on auto-create.
    return StreamConfig(
        name=cell.rooms_stream,
        subjects=[cell.room_created, cell.room_ended, cell.room_manual],
        placement=placement(cell),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=600.0,
        max_msg_size=subjects_max_msg_size(),
        discard=DiscardPolicy.NEW,
    )


def status_stream_config(replicas: int = 1, cell: subjects.Cell = subjects.SHARED) -> StreamConfig:
    return StreamConfig(
        name=cell.status_stream,
        subjects=[cell.room_status, cell.room_status_wildcard],
        placement=placement(cell),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=120.0,
        max_msg_size=subjects_max_msg_size(),
        discard=DiscardPolicy.NEW,
    )


def dead_letter_stream_config(replicas: int = 1, cell: subjects.Cell = subjects.SHARED) -> StreamConfig:
    # Kept for a week for operators to inspect; limits retention, so nothing consumes it away.
    return StreamConfig(
        name=cell.dead_letter_stream,
        subjects=[cell.dead_letter + ".>"],
        placement=placement(cell),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_age=7 * 24 * 3600.0,
        max_bytes=256 * 1024 * 1024,
    )


def subjects_max_msg_size() -> int:
    # Leave room for headers on top of the codec's payload cap.
    return MAX_MESSAGE_BYTES + 8 * 1024


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream if missing. An existing stream is left as it is (never silently rewritten),
    except that subjects a newer version added are added to it: nothing else of it changes."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s", config.name)
        return
    have = info.config
    wanted, had = set(config.subjects or []), set(have.subjects or [])
    missing = sorted(wanted - had)
    if missing and had <= wanted and have.retention == config.retention:
        try:
            await js.update_stream(dataclasses.replace(have, subjects=[*(have.subjects or []), *missing]))
        except Exception as err:  # a NATS user without stream rights (worker, ingest): not its job
            log.warning(
                "stream %s lacks subjects %s and this client may not add them (%s); an orchestrator of "
                "this version adds them when it starts",
                config.name,
                ", ".join(missing),
                err,
            )
            return
        log.info("stream %s: added subjects %s", config.name, ", ".join(missing))
        return
    if sorted(have.subjects or []) != sorted(config.subjects or []) or have.retention != config.retention:
        log.warning(
            "stream %s has subjects=%s retention=%s, expected %s %s; left unchanged",
            config.name,
            have.subjects,
            have.retention,
            config.subjects,
            config.retention,
        )


async def ensure_streams(
    js: JetStreamContext, replicas: int = 1, cell: subjects.Cell = subjects.SHARED
) -> None:
    for config in (
        rooms_stream_config(replicas, cell),
        status_stream_config(replicas, cell),
        dead_letter_stream_config(replicas, cell),
    ):
        await ensure_stream(js, config)


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


async def publish(
    js: JetStreamContext,
    subject: str,
    message: Message,
    msg_id: str,
    ack_wait: float = 5.0,
    family: str | None = None,
) -> int:
    """Publish one message to JetStream as a traced PRODUCER; returns the stream sequence.

    ``msg_id`` becomes ``Nats-Msg-Id``: a retry after a timeout (which may have landed) is stored
    once. Raises ``ContractError`` for an invalid/oversized message before anything is sent.
    ``family``: the subject's name without its per-pool token, for the span's name (few names).
    """
    payload = encode(message)
    with _tracer.start_as_current_span(
        f"send {family or subject}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": subject,
            "messaging.message.id": msg_id,
            "messaging.message.body.size": len(payload),
        },
    ):
        headers = inject_headers({subjects.MSG_ID_HEADER: msg_id})
        ack = await js.publish(subject, payload, timeout=ack_wait, headers=headers)
        return int(ack.seq)


async def publish_room_created(
    js: JetStreamContext, event: RoomCreated, cell: subjects.Cell = subjects.SHARED
) -> int:
    return await publish(js, cell.room_created, event, event.dedupe_id())


async def publish_manual_dispatch(
    js: JetStreamContext, event: RoomCreated, msg_id: str, cell: subjects.Cell = subjects.SHARED
) -> int:
    """An operator's manual dispatch (the only subject whose override is obeyed)."""
    return await publish(js, cell.room_manual, event, msg_id)


async def publish_room_ended(
    js: JetStreamContext, event: RoomEnded, cell: subjects.Cell = subjects.SHARED
) -> int:
    return await publish(js, cell.room_ended, event, event.dedupe_id())


async def publish_status(
    js: JetStreamContext, status: AgentStatus, cell: subjects.Cell = subjects.SHARED
) -> int:
    """To the status stream of the cell that holds the room (the dispatch's metadata names it)."""
    return await publish(
        js, cell.room_status_of(status.pool), status, status.dedupe_id(), family=cell.room_status
    )
