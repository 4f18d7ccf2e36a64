"""Heartbeats on core NATS about once a second; none while NATS is down (a stale beat is worse than none)."""

from __future__ import annotations

import asyncio
import logging

from agent_worker.nats_link import NatsLink
from agent_worker.worker_state import WorkerState
from shared import subjects
from shared.codec import encode

log = logging.getLogger(__name__)


async def beat_forever(state: WorkerState, link: NatsLink, wake: asyncio.Event) -> None:
    """Publish a heartbeat every interval, and at once whenever ``wake`` is set (e.g. draining began)."""
    subject = subjects.pool_heartbeat(state.opts.pool)
    seq = 0
    while True:
        client = link.client
        if client is not None:
            try:
                await client.publish(subject, encode(state.heartbeat(seq)))
                state.job_list.sent()
                seq += 1
            except Exception as exc:
                state.job_list.lost()
                log.warning("heartbeat not sent: %s", exc)
        wake.clear()
        try:
            async with asyncio.timeout(state.opts.heartbeat_interval_s):
                await wake.wait()
        except TimeoutError:
            pass
