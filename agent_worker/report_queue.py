"""Reports waiting for JetStream: a bounded buffer that survives NATS outages, in order.

The head report is retried (with capped exponential backoff, via stamina) until JetStream acks it;
``Nats-Msg-Id`` makes a retry after an ambiguous timeout land once. When the buffer is full the
oldest report is dropped and logged: a bounded buffer is the price of never blocking a job.
"""

from __future__ import annotations

import asyncio
import collections
import logging

import stamina
from opentelemetry import context as otel_context

from agent_worker.nats_link import NatsLink
from agent_worker.report_channel import JobReport
from shared import bus, subjects
from shared.tracecontext import extract_headers

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 3.0


class ReportQueue:
    def __init__(self, limit: int) -> None:
        self._items: collections.deque[JobReport] = collections.deque()
        self._limit = limit
        self._changed = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, report: JobReport) -> None:
        if len(self._items) >= self._limit:
            lost = self._items.popleft()
            self.dropped += 1
            log.error(
                "report buffer full (%d): dropped %s for dispatch %s",
                self._limit,
                lost.status.state,
                lost.status.dispatch_id,
            )
        self._items.append(report)
        self._empty.clear()
        self._changed.set()

    async def publish_forever(self, link: NatsLink) -> None:
        while True:
            while not self._items:
                self._changed.clear()
                await self._changed.wait()
            await self._publish_head(link)

    async def _publish_head(self, link: NatsLink) -> None:
        report = self._items[0]
        failures = 0
        async for attempt in stamina.retry_context(
            on=Exception, attempts=None, timeout=None, wait_initial=0.2, wait_max=2.0
        ):
            with attempt:
                js = await link.jetstream()
                token = otel_context.attach(extract_headers(report.trace))
                try:
                    async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                        await bus.publish_status(js, report.status, subjects.Cell(report.state_region))
                except Exception as exc:
                    failures += 1
                    if failures == 1:
                        log.warning(
                            "cannot publish %s report yet (%s); %d buffered, retrying",
                            report.status.state,
                            exc or type(exc).__name__,
                            len(self._items),
                        )
                    raise
                finally:
                    otel_context.detach(token)
        if failures:
            log.info("published %s report after %d failed attempts", report.status.state, failures)
        # The head may have been dropped by put() meanwhile; remove exactly the one we sent.
        if self._items and self._items[0] is report:
            self._items.popleft()
        if not self._items:
            self._empty.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything is published (True) or the time is up (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        except TimeoutError:
            return False
        return True
