"""How the pump settles a message: ack when handled; transient failures nak'ed with backoff forever,
never dead-lettered; poison dead-lettered after ``poison_after`` deliveries; and a message is only
terminated once its dead-letter copy is stored."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import cast

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import Link

from orchestrator.consumer import ConsumerSpec, MessagePump, Retry, ensure_consumer, is_transient
from orchestrator.livekit_gateway import LiveKitCallError
from orchestrator.store import Conflict
from shared import bus, subjects
from shared.codec import encode
from shared.messages import Message, RoomCreated

SPEC = ConsumerSpec(stream=subjects.ROOMS_STREAM, durable="test")
NO_LINK = Link(trace.INVALID_SPAN_CONTEXT)


class FakeMsg:
    """What the pump uses of a JetStream message, recording how it was settled."""

    def __init__(self, num_delivered: int, data: bytes | None = None, subject: str = subjects.ROOM_CREATED):
        self.subject = subject
        self.data = encode(RoomCreated(room="r")) if data is None else data
        self.headers: dict[str, str] | None = None
        self.metadata = Msg.Metadata(
            sequence=Msg.Metadata.SequencePair(consumer=num_delivered, stream=7),
            num_pending=0,
            num_delivered=num_delivered,
            timestamp=datetime.datetime.now(datetime.UTC),
            stream=subjects.ROOMS_STREAM,
            consumer="test",
        )
        self.settled: list[tuple[str, float | None]] = []

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(("nak", delay))

    async def term(self) -> None:
        self.settled.append(("term", None))

    async def in_progress(self) -> None:
        pass


class FakeJetStream:
    def __init__(self, *, publish_fails: bool = False) -> None:
        self.publish_fails = publish_fails
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(self, subject: str, payload: bytes, *, headers: dict[str, str], **_: object) -> None:
        if self.publish_fails:
            raise nats.errors.TimeoutError
        self.published.append((subject, payload, headers))


def failing(exc: Exception) -> Callable[[Message, Msg], Awaitable[None]]:
    async def handler(message: Message, msg: Msg) -> None:
        raise exc

    return handler


async def succeeding(message: Message, msg: Msg) -> None:
    pass


async def settle(
    msg: FakeMsg,
    handler: Callable[[Message, Msg], Awaitable[None]],
    js: FakeJetStream | None = None,
    spec: ConsumerSpec = SPEC,
) -> list[tuple[str, str]]:
    rejected: list[tuple[str, str]] = []
    pump = MessagePump(
        cast(JetStreamContext, js or FakeJetStream()),
        spec,
        {subjects.ROOM_CREATED: RoomCreated},
        handler,
        on_rejected=lambda subject, reason: rejected.append((subject, reason)),
    )
    await pump._slots.acquire()  # as run() does before it hands a message over
    await pump._one(cast(Msg, msg), NO_LINK)
    return rejected


async def test_handled_is_acked() -> None:
    msg = FakeMsg(1)
    await settle(msg, succeeding)
    assert msg.settled == [("ack", None)]


TRANSIENT = [
    Conflict("lost the CAS"),
    TimeoutError(),
    nats.errors.TimeoutError(),
    nats.errors.ConnectionClosedError(),
    nats.errors.NoRespondersError(),
    nats.js.errors.ServiceUnavailableError(),
    nats.js.errors.NoStreamResponseError(),
    ConnectionRefusedError(111, "refused"),
    OSError("network down"),
    LiveKitCallError("unavailable", "503", permanent=False, ambiguous=True),
    Retry("the handler says so"),
    ExceptionGroup("both", [TimeoutError(), Conflict("x")]),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
async def test_transient_failures_are_never_dead_lettered(exc: Exception) -> None:
    js = FakeJetStream()
    msg = FakeMsg(num_delivered=50)
    rejected = await settle(msg, failing(exc), js)
    assert msg.settled == [("nak", 30.0)]
    assert js.published == [] and rejected == []


POISON = [
    ValueError("bad"),
    KeyError("x"),
    LiveKitCallError("invalid_argument", "400", permanent=True),
    ExceptionGroup("mixed", [TimeoutError(), ValueError("bad")]),
]


@pytest.mark.parametrize("exc", POISON, ids=lambda e: type(e).__name__)
def test_poison_is_not_transient(exc: Exception) -> None:
    assert not is_transient(exc)


async def test_poison_is_retried_with_backoff_before_poison_after() -> None:
    js = FakeJetStream()
    for delivered in range(1, SPEC.poison_after):
        msg = FakeMsg(delivered)
        await settle(msg, failing(ValueError("bad")), js)
        assert msg.settled == [("nak", 0.5 * 2 ** (delivered - 1))]
    assert js.published == []


async def test_poison_is_dead_lettered_at_poison_after() -> None:
    js = FakeJetStream()
    msg = FakeMsg(SPEC.poison_after, data=encode(RoomCreated(room="poison")))
    rejected = await settle(msg, failing(ValueError("bad\nline")), js)
    assert msg.settled == [("term", None)]
    assert rejected == [(subjects.ROOM_CREATED, "max_deliveries")]
    [(subject, payload, headers)] = js.published
    assert subject == f"{subjects.DEAD_LETTER}.switchboard_rooms_created"
    assert payload == msg.data
    reason = headers[subjects.REJECT_REASON_HEADER]
    assert reason.startswith("max_deliveries: handler failed 6 times, last: ValueError: bad line")
    # A copy retried after an ambiguous publish timeout is deduplicated by the stream.
    assert headers[subjects.MSG_ID_HEADER] == f"{subjects.ROOMS_STREAM}.7"


async def test_a_failed_dead_letter_publish_naks_instead_of_terminating(
    caplog: pytest.LogCaptureFixture,
) -> None:
    js = FakeJetStream(publish_fails=True)
    msg = FakeMsg(SPEC.poison_after)
    with caplog.at_level(logging.WARNING, "orchestrator.consumer"):
        rejected = await settle(msg, failing(ValueError("bad")), js)
    assert msg.settled == [("nak", SPEC.backoff_s(SPEC.poison_after))]
    assert rejected == []  # counted only once stored
    assert "could not dead-letter" in caplog.text


async def test_undecodable_message_whose_dead_letter_fails_comes_back() -> None:
    msg = FakeMsg(1, data=b"{not json")
    rejected = await settle(msg, succeeding, FakeJetStream(publish_fails=True))
    assert [s for s, _ in msg.settled] == ["nak"]
    assert rejected == []
    msg = FakeMsg(2, data=b"{not json")
    js = FakeJetStream()
    rejected = await settle(msg, succeeding, js)
    assert msg.settled == [("term", None)] and len(js.published) == 1 and len(rejected) == 1


def test_backoff() -> None:
    assert [SPEC.backoff_s(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert SPEC.backoff_s(100_000) == 30  # no float overflow on a message retried for days
    assert ConsumerSpec("s", "d", max_backoff_s=0.05).backoff_s(1) == 0.05


# --------------------------------------------------------------------------------------------
# Against a real nats-server
# --------------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_transient_failures_are_retried_past_any_delivery_limit(
    nc: NATS, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js)
    spec = ConsumerSpec(subjects.ROOMS_STREAM, "settle-test", ack_wait_s=2.0, max_backoff_s=0.05)
    await ensure_consumer(js, spec)
    info = await js.consumer_info(spec.stream, spec.durable)
    assert info.config.max_deliver == -1

    # Used unchanged, and said so only when the settings differ.
    with caplog.at_level(logging.WARNING, "orchestrator.consumer"):
        await ensure_consumer(js, spec)
        assert "using it unchanged" not in caplog.text
        await ensure_consumer(js, ConsumerSpec(spec.stream, spec.durable, ack_wait_s=2.0, max_deliver=6))
        assert "using it unchanged" in caplog.text
    assert (await js.consumer_info(spec.stream, spec.durable)).config.max_deliver == -1

    acked = asyncio.Event()
    real_ack = Msg.ack

    async def ack(self: Msg) -> None:
        await real_ack(self)
        acked.set()

    monkeypatch.setattr(Msg, "ack", ack)
    deliveries: list[int] = []

    async def handler(message: Message, msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered)
        if len(deliveries) <= 8:
            raise nats.js.errors.ServiceUnavailableError

    await bus.publish_room_created(js, RoomCreated(room="outage"))
    pump = MessagePump(js, spec, {subjects.ROOM_CREATED: RoomCreated}, handler)
    running = asyncio.create_task(pump.run())
    try:
        async with asyncio.timeout(15):
            await acked.wait()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert deliveries == list(range(1, 10))
    await nc.flush()
    after = await js.consumer_info(spec.stream, spec.durable)
    assert (after.num_ack_pending, after.num_pending) == (0, 0)
    dead = await js.stream_info(subjects.DEAD_LETTER_STREAM)
    assert dead.state.messages == 0
