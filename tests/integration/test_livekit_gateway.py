"""The gateway against a real livekit-server: what LiveKit answers when the thing asked about is gone
(and that the gateway takes exactly those answers as "gone"), the restart policy of our dispatches,
a dispatch's jobs, and the participants of a room."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable
from typing import Literal

import pytest
from livekit import api as lkapi
from livekit import rtc
from livekit.protocol.agent_dispatch import JobRestartPolicy
from pydantic import SecretStr

from devstack.livekit_server import LiveKitServer
from devstack.ports import free_tcp_port
from orchestrator.livekit_gateway import (
    AGENT_NAME_ATTRIBUTE,
    DispatchJobs,
    ListedDispatch,
    LiveKitCallError,
    LiveKitGateway,
)
from shared.dispatch_metadata import build_dispatch_metadata
from shared.messages import DispatchInfo
from shared.settings import LiveKitSettings

pytestmark = pytest.mark.integration

_rooms = itertools.count()


def room_name(what: str) -> str:
    # The livekit_server fixture is shared by the session: every test takes rooms of its own.
    return f"gateway-{what}-{next(_rooms)}"


def settings(server: LiveKitServer, **changes: object) -> LiveKitSettings:
    base = LiveKitSettings(url=server.http_url, api_key=server.api_key, api_secret=server.api_secret)
    return base.model_copy(update=changes)


@pytest.fixture
async def gateway(livekit_server: LiveKitServer) -> AsyncIterator[LiveKitGateway]:
    async with LiveKitGateway(settings(livekit_server)) as gw:
        yield gw


class EndsInBetween(LiveKitGateway):
    """Sees the room when it first looks, as if it ended right after."""

    looked = 0

    async def room_exists(self, room: str) -> bool:
        self.looked += 1
        return self.looked == 1 or await super().room_exists(room)


async def twirp_answer(call: Awaitable[object]) -> tuple[int, str]:
    with pytest.raises(lkapi.TwirpError) as caught:
        await call
    return caught.value.status, caught.value.code


async def make_room(api: lkapi.LiveKitAPI, name: str) -> None:
    await api.room.create_room(lkapi.CreateRoomRequest(name=name))


async def test_delete_dispatch_takes_only_gone_answers_as_gone(
    livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI, gateway: LiveKitGateway
) -> None:
    missing_room = room_name("missing")
    # A room no node hosts: LiveKit answers as it would in an outage.
    assert await twirp_answer(livekit_api.agent_dispatch.delete_dispatch("AD_none", missing_room)) == (
        503,
        "unavailable",
    )
    await gateway.delete_dispatch("AD_none", missing_room)
    assert not await gateway.room_exists(missing_room)  # and looking did not create it
    # The room ends between the gateway's look and its DeleteDispatch: that 503 is "gone" too.
    racing = EndsInBetween(settings(livekit_server))
    async with racing:
        await racing.delete_dispatch("AD_none", missing_room)
        assert racing.looked == 2

    room = room_name("no-dispatch")
    await make_room(livekit_api, room)
    assert await twirp_answer(livekit_api.agent_dispatch.delete_dispatch("AD_none", room)) == (
        404,
        "not_found",
    )
    await gateway.delete_dispatch("AD_none", room)

    dispatch_id = await gateway.create_dispatch(room, "nobody", "")
    await gateway.delete_dispatch(dispatch_id, room)
    assert await gateway.dispatch_jobs(room, dispatch_id) is None
    await gateway.delete_dispatch(dispatch_id, room)  # a second time: already gone

    # Anything else is raised: bad credentials, LiveKit unreachable.
    async with LiveKitGateway(settings(livekit_server, api_secret=SecretStr("x" * 40))) as wrong:
        with pytest.raises(LiveKitCallError) as refused:
            await wrong.delete_dispatch("AD_none", room)
        assert refused.value.reason == "unauthenticated"
    nowhere = settings(livekit_server, url=f"http://127.0.0.1:{free_tcp_port()}", request_timeout_s=2.0)
    async with LiveKitGateway(nowhere) as away:
        with pytest.raises(LiveKitCallError) as unreachable:
            await away.delete_dispatch("AD_none", room)
        assert unreachable.value.reason == "unreachable"


async def test_remove_participant_takes_only_gone_answers_as_gone(
    livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI, gateway: LiveKitGateway
) -> None:
    room = room_name("no-participant")
    await make_room(livekit_api, room)
    who = lkapi.RoomParticipantIdentity(room=room, identity="nobody")
    assert await twirp_answer(livekit_api.room.remove_participant(who)) == (404, "not_found")
    await gateway.remove_participant(room, "nobody")

    missing = lkapi.RoomParticipantIdentity(room=room_name("missing"), identity="nobody")
    assert await twirp_answer(livekit_api.room.remove_participant(missing)) == (404, "not_found")
    await gateway.remove_participant(missing.room, "nobody")

    async with LiveKitGateway(settings(livekit_server, api_secret=SecretStr("x" * 40))) as wrong:
        with pytest.raises(LiveKitCallError) as refused:
            await wrong.remove_participant(room, "nobody")
        assert refused.value.reason == "unauthenticated"


async def test_dispatches_are_never_restarted_by_livekit(
    livekit_api: lkapi.LiveKitAPI, gateway: LiveKitGateway
) -> None:
    room = room_name("restart-policy")
    dispatch_id = await gateway.create_dispatch(room, "nobody", "meta")
    listed = {d.id: d for d in await livekit_api.agent_dispatch.list_dispatch(room)}
    assert listed[dispatch_id].restart_policy == JobRestartPolicy.JRP_NEVER


async def test_dispatch_jobs(livekit_api: lkapi.LiveKitAPI, gateway: LiveKitGateway) -> None:
    room = room_name("jobs")
    dispatch_id = await gateway.create_dispatch(room, "nobody", "")
    # No worker registers "nobody": LiveKit lists the dispatch without a job.
    assert await gateway.dispatch_jobs(room, dispatch_id) == DispatchJobs(count=0, identities=frozenset())
    assert await gateway.dispatch_jobs(room, "AD_none") is None

    missing = room_name("missing")
    # ListDispatch in a room that does not exist: the same 503 as for DeleteDispatch.
    assert await twirp_answer(livekit_api.agent_dispatch.list_dispatch(missing)) == (503, "unavailable")
    assert await gateway.dispatch_jobs(missing, dispatch_id) is None
    assert await gateway.find_dispatch(missing, "nobody", "key") is None
    assert await gateway.room_dispatches(missing) is None


async def test_room_dispatches_read_our_key_and_the_room_a_dispatch_was_for(gateway: LiveKitGateway) -> None:
    room = room_name("listed")
    info = DispatchInfo(
        room=room, attempt=1, pool="eu-a", region="eu-central", agent="ornina", key="k/1", sid="RM_x"
    )
    ours = await gateway.create_dispatch(room, "nobody", build_dispatch_metadata("user's own", info))
    theirs = await gateway.create_dispatch(room, "someone", "not ours")
    listed = {d.id: d for d in await gateway.room_dispatches(room) or []}
    assert listed[ours] == ListedDispatch(ours, "nobody", "k/1", "RM_x", frozenset())
    assert listed[theirs] == ListedDispatch(theirs, "someone", None, None, frozenset())


def join_token(
    server: LiveKitServer,
    room: str,
    identity: str,
    kind: Literal["standard", "agent"],
    attributes: dict[str, str] | None = None,
) -> str:
    token = (
        lkapi.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_kind(kind)
        .with_grants(lkapi.VideoGrants(room_join=True, room=room))
    )
    if attributes:
        token = token.with_attributes(attributes)
    return token.to_jwt()


async def test_participants(
    livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI, gateway: LiveKitGateway
) -> None:
    missing = room_name("missing")
    # LiveKit lists a room that does not exist as an empty one: the gateway tells them apart.
    listed = await livekit_api.room.list_participants(lkapi.ListParticipantsRequest(room=missing))
    assert list(listed.participants) == []
    assert await gateway.participants(missing) is None
    assert await gateway.callers(missing) is None
    assert not await gateway.room_exists(missing)

    room = room_name("participants")
    await make_room(livekit_api, room)
    assert await gateway.participants(room) == frozenset()
    assert await gateway.callers(room) == frozenset()

    agent, unnamed, visitor = rtc.Room(), rtc.Room(), rtc.Room()
    try:
        # connect() returns once LiveKit answered the join: all are then listed. A livekit-agents
        # worker names its agent_name in the lk.agent.name attribute of the job's participant.
        named = {AGENT_NAME_ATTRIBUTE: "ornina.eu-central-a"}
        await agent.connect(
            livekit_server.ws_url, join_token(livekit_server, room, "the-agent", "agent", named)
        )
        await unnamed.connect(livekit_server.ws_url, join_token(livekit_server, room, "an-agent", "agent"))
        # A caller cannot pass for an agent by naming an agent_name: its kind says what it is.
        await visitor.connect(
            livekit_server.ws_url, join_token(livekit_server, room, "a-visitor", "standard", named)
        )
        assert await gateway.participants(room) == frozenset({"the-agent", "an-agent", "a-visitor"})
        assert await gateway.callers(room) == frozenset({"a-visitor"})
        assert await gateway.roster(room) == {
            "the-agent": "ornina.eu-central-a",
            "an-agent": "",
            "a-visitor": None,
        }
        assert await gateway.roster(missing) is None
    finally:
        for participant in (agent, unnamed, visitor):
            await participant.disconnect()
