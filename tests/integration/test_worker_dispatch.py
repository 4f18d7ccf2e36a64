"""A dispatch to a pool, end to end: real livekit-server, real nats-server, the worker as a process."""

from __future__ import annotations

import asyncio

from livekit import api as lkapi
from nats.aio.client import Client as NATS
from opentelemetry import trace

from devstack.livekit_server import LiveKitServer
from shared.tracecontext import extract_headers
from tests.workerkit import (
    Listener,
    WorkerFactory,
    agents_in_room,
    dispatch,
    is_state,
    statuses,
    workers,  # noqa: F401  (fixture)
)

JOIN_TIMEOUT_S = 30.0
VOICE_TIMEOUT_S = 30.0


async def test_dispatch_joins_speaks_and_reports(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
    livekit_server: LiveKitServer,
) -> None:
    worker = workers.start("pool-a")
    room = "room-dispatch-1"
    async with statuses(nc) as inbox:
        with trace.get_tracer("test").start_as_current_span("orchestrator dispatch") as span:
            dispatch_id = await dispatch(livekit_api, worker, room, attempt=3)
        joined = await inbox.wait_for(is_state(dispatch_id, "joined"), JOIN_TIMEOUT_S, "joined")
        assert (joined.room, joined.attempt, joined.pool) == (room, 3, "pool-a")
        assert joined.worker and joined.identity and joined.warnings == []
        # The status continues the dispatcher's trace (through the dispatch metadata).
        carried = trace.get_current_span(extract_headers(inbox.headers_of(joined))).get_span_context()
        assert carried.trace_id == span.get_span_context().trace_id

        async with Listener(livekit_server, room) as listener:
            await listener.wait_audible(VOICE_TIMEOUT_S)
            voice = await inbox.wait_for(is_state(dispatch_id, "voice"), VOICE_TIMEOUT_S, "voice")
        assert listener.loudest_rms > 0.05
        assert voice.identity == joined.identity

        agents = await agents_in_room(livekit_api, room)
        assert [a.identity for a in agents] == [joined.identity]
        assert agents[0].attributes["switchboard.pool"] == "pool-a"

        async with asyncio.timeout(10):
            await livekit_api.room.delete_room(lkapi.DeleteRoomRequest(room=room))
        left = await inbox.wait_for(is_state(dispatch_id, "left"), 20, "left")
        assert left.reason


async def test_process_executor_reports_the_same(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
    livekit_server: LiveKitServer,
) -> None:
    """The job wrapper is pickled into a forkserver job process; reports still reach NATS."""
    worker = workers.start("pool-proc", extra_args=["--executor", "process"])
    room = "room-process-executor"
    async with statuses(nc) as inbox, Listener(livekit_server, room) as listener:
        dispatch_id = await dispatch(livekit_api, worker, room, attempt=1)
        joined = await inbox.wait_for(is_state(dispatch_id, "joined"), JOIN_TIMEOUT_S, "joined")
        await listener.wait_audible(VOICE_TIMEOUT_S)
        voice = await inbox.wait_for(is_state(dispatch_id, "voice"), VOICE_TIMEOUT_S, "voice")
    assert joined.attempt == voice.attempt == 1
