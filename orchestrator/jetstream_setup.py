"""A replica's JetStream start-up: streams, consumers and buckets, retried while JetStream settles.

A NATS cluster that has just started (or lost its meta leader) answers JetStream API requests
with timeouts or "temporarily unavailable" for a few seconds. A replica that exited on the first
such answer turned a normal cluster start into a crash loop (seen in drill 3's fresh 3-node
cluster); so the whole set-up is retried, each step being idempotent, within
:data:`JETSTREAM_STARTUP_S`, and only then fails with the last error. The replica is not ready
meanwhile (its probes start after this step).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import stamina
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext
from nats.js.errors import ServiceUnavailableError
from nats.js.kv import KeyValue

from orchestrator.consumer import ConsumerSpec, ensure_consumer
from orchestrator.membership import open_members_bucket
from orchestrator.room.resync import open_resync_bucket
from orchestrator.store import RoomStore, migrate_unpartitioned, open_archive, open_bucket
from shared import bus
from shared.config import OrchestratorConfig
from shared.subjects import SHARED, Cell

log = logging.getLogger(__name__)

# Long enough for a fresh R3 cluster to elect its meta leader and place the streams; a server
# without JetStream at all (no responders) is reported after it too, with that error.
JETSTREAM_STARTUP_S = 60.0
NOT_READY = (NatsTimeoutError, ServiceUnavailableError, NoRespondersError)


@dataclass(frozen=True)
class JetStreamHandles:
    store: RoomStore
    members: KeyValue
    resync: KeyValue | None  # None when resync is off


async def open_jetstream(
    js: JetStreamContext,
    cfg: OrchestratorConfig,
    replicas: int,
    consumers: tuple[ConsumerSpec, ...],
    cell: Cell = SHARED,
) -> JetStreamHandles:
    """Create what is missing (never reconfiguring what exists) and bind to it."""
    failures = 0
    async for attempt in stamina.retry_context(
        on=NOT_READY, attempts=None, timeout=JETSTREAM_STARTUP_S, wait_initial=0.25, wait_max=3.0
    ):
        with attempt:
            try:
                return await _open(js, cfg, replicas, consumers, cell)
            except NOT_READY as exc:
                failures += 1
                log.warning(
                    "JetStream not ready (%s: %s); set-up try %d, retrying for up to %.0f s",
                    type(exc).__name__,
                    exc,
                    failures,
                    JETSTREAM_STARTUP_S,
                )
                raise
    raise AssertionError("unreachable: stamina either returns a result or raises")


async def _open(
    js: JetStreamContext,
    cfg: OrchestratorConfig,
    replicas: int,
    consumers: tuple[ConsumerSpec, ...],
    cell: Cell,
) -> JetStreamHandles:
    await bus.ensure_streams(js, replicas, cell)
    kv = await open_bucket(js, replicas, cell)
    for spec in consumers:
        await ensure_consumer(js, spec)
    archive = await open_archive(js, cfg.terminal_record_ttl_s, replicas, cell)
    store = RoomStore(kv, js, cfg.ended_record_ttl_s, archive, bucket=cell.rooms_bucket)
    await migrate_unpartitioned(store)
    members = await open_members_bucket(js, cfg.member_ttl_s, replicas, cell)
    resync = await open_resync_bucket(js, replicas, cell) if cfg.resync_interval_s else None
    return JetStreamHandles(store, members, resync)
