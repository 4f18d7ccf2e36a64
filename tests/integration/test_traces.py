"""One trace per room, in-process with an in-memory exporter: the exact span tree for a room that
goes straight to speaking, and for one redispatched after its pool died."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.records import RoomState
from orchestrator.store import open_bucket
from shared import subjects
from shared.messages import RoomCreated
from tests.orchestratorkit import (
    FakePool,
    make_config,
    make_settings,
    publish_created_room,
    running_orchestrator,
    wait_for_record,
)

S = RoomState
pytestmark = pytest.mark.integration


def _trace(spans: Sequence[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def _one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"expected one {name!r}, got {[s.name for s in spans]}"
    return found[0]


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def _dispatch_metadata(api: lkapi.LiveKitAPI, room: str, dispatch_id: str) -> str:
    dispatches = await api.agent_dispatch.list_dispatch(room_name=room)
    return next(d.metadata for d in dispatches if d.id == dispatch_id)


async def test_span_tree_of_a_room_that_goes_straight_to_speaking(
    nc: NATS,
    nats_server: NatsServer,
    livekit_server: LiveKitServer,
    livekit_api: lkapi.LiveKitAPI,
    spans: InMemorySpanExporter,
) -> None:
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        event = await publish_created_room(js, livekit_api, RoomCreated(room="ornina-trace-1"))
        rec = await wait_for_record(kv, "ornina-trace-1", {S.DISPATCHED})
        assert rec.dispatch_id
        meta = await _dispatch_metadata(livekit_api, "ornina-trace-1", rec.dispatch_id)
        await pool.report("ornina-trace-1", rec.dispatch_id, 1, "joined", dispatch_metadata=meta)
        await pool.report("ornina-trace-1", rec.dispatch_id, 1, "voice", dispatch_metadata=meta)
        rec = await wait_for_record(kv, "ornina-trace-1", {S.SPEAKING})
    await pool.stop()

    finished = spans.get_finished_spans()
    send = next(
        s
        for s in finished
        if s.name == f"send {subjects.ROOM_CREATED}"
        and s.attributes
        and s.attributes.get("messaging.message.id") == event.sid
    )
    assert send.kind == SpanKind.PRODUCER and send.parent is None
    assert send.context is not None
    room_trace = _trace(finished, send.context.trace_id)
    assert rec.trace_id == format(send.context.trace_id, "032x")

    process = _one(room_trace, f"process {subjects.ROOM_CREATED}")
    assert process.kind == SpanKind.CONSUMER and _parent(process) == _id(send)
    assert process.attributes is not None and process.attributes["messaging.system"] == "nats"
    assert process.attributes["messaging.consumer.group.name"] == subjects.ORCHESTRATOR_CONSUMER
    # The batch receive span is its own trace, linked to each message; process links back to it.
    receive = next(
        s
        for s in finished
        if s.name == f"receive {subjects.ROOMS_STREAM}"
        and any(link.context.span_id == _id(send) for link in s.links)
    )
    assert receive.kind == SpanKind.CLIENT
    assert any(link.context.span_id == _id(receive) for link in process.links)

    schedule = _one(room_trace, "schedule")
    assert _parent(schedule) == _id(process)
    assert (
        schedule.attributes is not None and schedule.attributes["switchboard.decision.pool"] == "eu-central-a"
    )
    assert schedule.attributes["switchboard.room"] == "ornina-trace-1"
    dispatch = _one(room_trace, "dispatch")
    assert _parent(dispatch) == _id(process)
    create = _one(room_trace, "CreateDispatch")
    assert create.kind == SpanKind.CLIENT and _parent(create) == _id(dispatch)
    assert create.attributes is not None and create.attributes["switchboard.dispatch_id"] == rec.dispatch_id
    assert create.attributes["switchboard.pool"] == "eu-central-a"

    # The worker's job continues from the CreateDispatch span through the dispatch metadata.
    jobs = [s for s in room_trace if s.name == "agent job"]
    assert len(jobs) == 2 and all(_parent(j) == _id(create) for j in jobs)
    status_sends = [s for s in room_trace if s.name == f"send {subjects.ROOM_STATUS}"]
    status_process = [s for s in room_trace if s.name == f"process {subjects.ROOM_STATUS}"]
    assert len(status_sends) == 2 and len(status_process) == 2
    assert {_parent(p) for p in status_process} == {_id(s) for s in status_sends}
    for span in room_trace:
        assert "ornina-trace-1" not in span.name  # low-cardinality names only


async def test_span_tree_of_a_room_redispatched_after_its_pool_died(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, spans: InMemorySpanExporter
) -> None:
    js = nc.jetstream()
    eu, us = FakePool(nc, "eu-central-a", "eu-central"), FakePool(nc, "us-east-a", "us-east")
    await eu.start()
    await us.start()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-trace-2"))
        rec = await wait_for_record(kv, "ornina-trace-2", {S.DISPATCHED})
        assert rec.dispatch_id
        await eu.report("ornina-trace-2", rec.dispatch_id, 1, "voice")
        await wait_for_record(kv, "ornina-trace-2", {S.SPEAKING})
        await eu.stop()
        rec = await wait_for_record(kv, "ornina-trace-2", {S.DISPATCHED})
        assert rec.attempt == 2
    await us.stop()

    finished = spans.get_finished_spans()
    assert rec.trace_id is not None
    room_trace = _trace(finished, int(rec.trace_id, 16))
    process = _one(room_trace, f"process {subjects.ROOM_CREATED}")
    redispatch = _one(room_trace, "redispatch")
    # Started by a sweep (no message in hand): parented on the room's process span from the record.
    assert _parent(redispatch) == _id(process)
    assert redispatch.attributes is not None
    assert redispatch.attributes["switchboard.redispatch.cause"] == "pool_dead"
    assert redispatch.attributes["switchboard.pool"] == "eu-central-a"
    schedules = sorted((s for s in room_trace if s.name == "schedule"), key=lambda s: s.start_time or 0)
    assert len(schedules) == 2 and _parent(schedules[1]) == _id(redispatch)
    assert schedules[1].attributes is not None
    assert schedules[1].attributes["switchboard.decision.pool"] == "us-east-a"
    assert any(
        e.name == "rejected" and e.attributes and e.attributes["switchboard.pool"] == "eu-central-a"
        for e in schedules[1].events
    )
    creates = [s for s in room_trace if s.name == "CreateDispatch"]
    assert len(creates) == 2
    assert [c.attributes["switchboard.attempt"] for c in creates if c.attributes] == [1, 2]
