"""Durable pull consumers on JetStream: set up once, pulled by every replica, dead-lettered with a reason.

One shared durable per stream spreads events over the replicas. A message is acked only after its
handler returned (the state it caused is durable in KV). A handler failure naks it with a growing
delay. Failures of infrastructure that comes back (KV/JetStream, NATS, LiveKit unavailable: see
:func:`is_transient` and :class:`Retry`) are retried for as long as it takes: the server's
``max_deliver`` is unlimited, so an outage never costs a valid event. Any other failure is poison:
after ``poison_after`` deliveries the message, like one that cannot be decoded, is copied to the
dead-letter subject with the reason in a header and terminated, so it never blocks the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from orchestrator.alongside import alongside
from orchestrator.livekit_gateway import LiveKitCallError
from orchestrator.pull import Puller
from orchestrator.store import Conflict
from shared import subjects
from shared.codec import ContractError, decode
from shared.messages import Message
from shared.tracecontext import extract_headers

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("switchboard.consumer")
M = TypeVar("M", bound=Message)


class Retry(Exception):
    """Raise from a handler to say its failure is transient (``raise Retry("why") from err``): the
    message is nak'ed with backoff and delivered again for as long as it takes, never dead-lettered.
    For infrastructure that will come back and that :func:`is_transient` does not recognise; anything
    else a handler raises counts as poison."""


def is_transient(exc: BaseException) -> bool:
    """Whether a handler's failure comes from infrastructure that will come back (retry forever)
    rather than from the message itself (dead-letter it after ``poison_after`` deliveries)."""
    if isinstance(exc, LiveKitCallError):
        return not exc.permanent
    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e) for e in exc.exceptions)
    # nats.errors.Error covers nats.js.errors (KV, JetStream API); OSError covers ConnectionError
    # and TimeoutError (asyncio's too).
    return isinstance(exc, Retry | Conflict | TimeoutError | nats.errors.Error | OSError)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    stream: str
    durable: str
    # Short, so the events a crashed replica had pulled come back to the others quickly; a live
    # replica keeps each message it works on with in_progress() (see _keep_working).
    ack_wait_s: float = 10.0
    # Unlimited: the pump decides when a message is dead-lettered. A server-side limit would drop
    # valid events after an outage longer than the naks' backoff adds up to, and nothing replays them.
    max_deliver: int = -1
    max_ack_pending: int = 2000
    # Where messages that cannot be handled are kept (the stream's cell's dead-letter subject).
    dead_letter: str = subjects.DEAD_LETTER
    # Deliveries after which a message whose handler keeps failing (not transiently) is dead-lettered.
    poison_after: int = 6
    # Cap of the nak delay, so a message comes back within this long after an outage ends.
    max_backoff_s: float = 30.0

    def backoff_s(self, delivered: int) -> float:
        """The nak delay after delivery ``delivered`` failed: 0.5 s doubling, capped."""
        # The exponent is bounded: 2**n for a message delivered thousands of times overflows a float.
        return min(0.5 * 2.0 ** min(max(delivered - 1, 0), 32), self.max_backoff_s)

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
        )


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create the durable if missing. An existing one is used as it is: nats-py's add_consumer would
    silently rewrite it, and replicas of different versions would flip its settings back and forth."""
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        await js.add_consumer(spec.stream, spec.config())
        log.info("created consumer %s on %s", spec.durable, spec.stream)
        return
    have = info.config
    if (have.ack_wait, have.max_deliver, have.max_ack_pending) != (
        spec.ack_wait_s,
        spec.max_deliver,
        spec.max_ack_pending,
    ):
        log.warning(
            "consumer %s on %s has ack_wait=%s max_deliver=%s max_ack_pending=%s; this replica expects "
            "%s %s %s; using it unchanged (update it deliberately with the nats CLI)",
            spec.durable,
            spec.stream,
            have.ack_wait,
            have.max_deliver,
            have.max_ack_pending,
            spec.ack_wait_s,
            spec.max_deliver,
            spec.max_ack_pending,
        )


async def dead_letter(
    js: JetStreamContext,
    msg: Msg,
    reason: str,
    *,
    retry_in_s: float = 5.0,
    subject: str = subjects.DEAD_LETTER,
) -> bool:
    """Keep the original bytes for an operator, with the reason, then stop redelivery. Only once the
    copy is stored is the message terminated: when the publish fails it is nak'ed to come back in
    ``retry_in_s`` (and dead-lettered then), never dropped. Returns whether it was dead-lettered."""
    meta = msg.metadata
    headers = {
        subjects.REJECT_REASON_HEADER: reason[:1000].replace("\r", " ").replace("\n", " "),
        # A publish that timed out may still have landed: the retry must not store a second copy.
        subjects.MSG_ID_HEADER: f"{meta.stream}.{meta.sequence.stream}",
    }
    original = msg.subject.replace(".", "_")
    try:
        await js.publish(f"{subject}.{original}", msg.data, headers=headers, timeout=5)
    except Exception as err:
        log.warning(
            "could not dead-letter message on %s (%r); it comes back in %.1fs", msg.subject, err, retry_in_s
        )
        try:
            await msg.nak(delay=retry_in_s)
        except Exception as nak_err:  # connection away: the server redelivers after ack_wait anyway
            log.debug("nak failed: %r", nak_err)
        return False
    await msg.term()
    return True


Handler = Callable[[M, Msg], Awaitable[None]]


async def _keep_working(msg: Msg, every_s: float) -> None:
    """Tell JetStream we still work on ``msg`` every ``every_s`` (run alongside its handler), so a
    slow LiveKit never gets the message redelivered to another replica mid-dispatch."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await msg.in_progress()
        except Exception as err:  # connection away: the redelivery is harmless (records dedupe)
            log.debug("in_progress failed: %r", err)


class MessagePump:
    """Fetch, decode, trace and hand each message to its handler, with bounded concurrency."""

    def __init__(
        self,
        js: JetStreamContext,
        spec: ConsumerSpec,
        decoders: dict[str, type[Message]],
        handler: Callable[[Message, Msg], Awaitable[None]],
        *,
        concurrency: int = 64,
        batch: int = 64,
        on_rejected: Callable[[str, str], None] | None = None,
    ) -> None:
        self.js = js
        self.spec = spec
        self.decoders = decoders
        self.handler = handler
        self.batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._on_rejected = on_rejected
        self.bound = False

    async def run(self) -> None:
        puller = Puller.of(self.js, self.spec.stream, self.spec.durable, batch=self.batch)
        async with puller:
            self.bound = True
            try:
                await self._pump(puller)
            finally:
                self.bound = False

    async def _pump(self, puller: Puller) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    msgs = await puller.next()
                except Exception as err:
                    # Reconnecting, a restarted server: keep pulling.
                    log.warning("pull from %s failed (%r); retrying", self.spec.stream, err)
                    await asyncio.sleep(0.5)
                    continue
                links = [
                    Link(trace.get_current_span(extract_headers(m.headers)).get_span_context()) for m in msgs
                ]
                with _tracer.start_as_current_span(
                    f"receive {self.spec.stream}",
                    kind=SpanKind.CLIENT,
                    links=links,
                    attributes={
                        "messaging.system": "nats",
                        "messaging.operation.type": "receive",
                        "messaging.operation.name": "fetch",
                        "messaging.destination.name": self.spec.stream,
                        "messaging.consumer.group.name": self.spec.durable,
                        "messaging.batch.message_count": len(msgs),
                    },
                ) as receive:
                    receive_link = Link(receive.get_span_context())
                for msg in msgs:
                    await self._slots.acquire()
                    tg.create_task(self._one(msg, receive_link))

    def _decoder(self, subject: str) -> tuple[str, type[Message] | None]:
        """The subject's family (its decoders key; a per-pool ``x.*`` one named ``x``) and model."""
        if (model := self.decoders.get(subject)) is not None:
            return subject, model
        family = subject.rsplit(".", 1)[0]
        return family, self.decoders.get(f"{family}.*")

    async def _one(self, msg: Msg, receive_link: Link) -> None:
        try:
            family, model = self._decoder(msg.subject)
            parent = extract_headers(msg.headers)
            with _tracer.start_as_current_span(
                f"process {family}",
                context=parent,
                kind=SpanKind.CONSUMER,
                links=[receive_link],
                attributes={
                    "messaging.system": "nats",
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.destination.name": msg.subject,
                    "messaging.consumer.group.name": self.spec.durable,
                    "messaging.message.body.size": len(msg.data),
                    "messaging.message.id": (msg.headers or {}).get(subjects.MSG_ID_HEADER, ""),
                },
            ) as span:
                if model is None:
                    await self._reject(msg, "unknown_subject", f"no decoder for subject {msg.subject}")
                    return
                try:
                    message = decode(model, msg.data)
                except ContractError as err:
                    span.set_attribute("error.type", err.reason)
                    await self._reject(msg, err.reason, str(err))
                    return
                try:
                    async with alongside(_keep_working(msg, self.spec.ack_wait_s / 3), "in_progress"):
                        await self.handler(message, msg)
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_attribute("error.type", type(exc).__name__)
                    await self._failed(msg, exc)
                    return
                await msg.ack()
        except Exception:
            log.exception("could not settle message on %s", msg.subject)
        finally:
            self._slots.release()

    async def _failed(self, msg: Msg, exc: Exception) -> None:
        delivered = msg.metadata.num_delivered
        delay = self.spec.backoff_s(delivered)
        if is_transient(exc):
            # Every pending message fails like this through an outage: log its first tries and then
            # only now and then, not each message every max_backoff_s.
            level = logging.WARNING if delivered <= 3 or delivered % 10 == 0 else logging.DEBUG
            log.log(
                level,
                "handling %s failed transiently (delivery %d), retrying in %.1fs: %s: %s",
                msg.subject,
                delivered,
                delay,
                type(exc).__name__,
                exc,
            )
            await msg.nak(delay=delay)
        elif delivered >= self.spec.poison_after:
            await self._reject(
                msg,
                "max_deliveries",
                f"handler failed {delivered} times, last: {type(exc).__name__}: {exc}",
                retry_in_s=delay,
            )
        else:
            log.warning("handling %s failed (delivery %d): %s", msg.subject, delivered, exc, exc_info=exc)
            await msg.nak(delay=delay)

    async def _reject(self, msg: Msg, reason: str, detail: str, *, retry_in_s: float | None = None) -> None:
        log.warning("rejected message on %s: %s", msg.subject, detail, extra={"reason": reason})
        if retry_in_s is None:
            retry_in_s = self.spec.backoff_s(msg.metadata.num_delivered)
        # Counted once it is stored: a failed copy comes back and is rejected again.
        if (
            await dead_letter(
                self.js, msg, f"{reason}: {detail}", retry_in_s=retry_in_s, subject=self.spec.dead_letter
            )
            and self._on_rejected
        ):
            self._on_rejected(msg.subject, reason)
