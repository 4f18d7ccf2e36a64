"""Voice published on the agent's behalf: an agent whose avatar participant (``lk.publish_on_behalf``
= the agent's identity) speaks for it reports ``voice`` once a listener is in the room and the
avatar's audio is sound, not silence. Real livekit-server and nats-server, the worker as a process;
the test plays the provider's avatar participant."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest
from livekit import api as lkapi
from livekit import rtc
from nats.aio.client import Client as NATS

from agent_worker.room_observer import PUBLISH_ON_BEHALF
from devstack.listener import AUDIBLE_RMS
from devstack.livekit_server import LiveKitServer
from shared.messages import AgentStatus
from tests.workerkit import (
    Inbox,
    Listener,
    WorkerFactory,
    agents_in_room,
    dispatch,
    is_state,
    statuses,
    workers,  # noqa: F401  (fixture)
)

AVATAR_AGENT = ["--entrypoint", "tests.agents.avatar_agent:entrypoint"]
RATE = 48_000
FRAME = 480  # 10 ms
TONE_PEAK = 0.3
STEP_S = 15.0  # any one step: a join, a subscription, a voice report
# How long a report that should not come is waited for: the observer judges a window every 0.2 s,
# so this is more than ten chances to get it wrong.
NO_VOICE_S = 3.0


class Avatar:
    """The provider's avatar participant, as a plugin's token makes it: kind agent, with
    ``lk.publish_on_behalf`` = the agent's identity. Publishes a 330 Hz tone at ``peak`` (0 =
    digital silence), which a test may change while it plays."""

    def __init__(self, livekit: LiveKitServer, room: str, agent_identity: str, peak: float) -> None:
        self._livekit, self._room_name, self._agent = livekit, room, agent_identity
        self.peak = peak
        self.room = rtc.Room()
        self.subscribed = asyncio.Event()  # someone (here: first the agent) subscribed to our audio
        self.room.on("local_track_subscribed", lambda _track: self.subscribed.set())
        self._source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
        self._player: asyncio.Task[None] | None = None

    def token(self) -> str:
        return (
            lkapi.AccessToken(self._livekit.api_key, self._livekit.api_secret)
            .with_identity(f"avatar-{self._room_name}")
            .with_kind("agent")
            .with_attributes({PUBLISH_ON_BEHALF: self._agent})
            .with_grants(lkapi.VideoGrants(room_join=True, room=self._room_name, can_publish=True))
            .to_jwt()
        )

    async def start(self) -> None:
        async with asyncio.timeout(STEP_S):
            await self.room.connect(self._livekit.ws_url, self.token())
            track = rtc.LocalAudioTrack.create_audio_track("avatar-audio", self._source)
            await self.room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
        self._player = asyncio.create_task(self._play())

    async def _play(self) -> None:
        t = np.arange(FRAME) / RATE
        n = 0
        while True:  # capture_frame paces us in real time (its queue holds 100 ms)
            wave = self.peak * 32767 * np.sin(2 * np.pi * 330 * (t + n * FRAME / RATE))
            await self._source.capture_frame(rtc.AudioFrame(wave.astype(np.int16).tobytes(), RATE, 1, FRAME))
            n += 1

    async def stop(self) -> None:
        if self._player:
            self._player.cancel()
            await asyncio.gather(self._player, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.room.disconnect()


@contextlib.asynccontextmanager
async def avatar_for(livekit: LiveKitServer, room: str, agent: str, peak: float) -> AsyncIterator[Avatar]:
    avatar = Avatar(livekit, room, agent, peak)
    try:
        await avatar.start()
        yield avatar
    finally:
        await avatar.stop()


async def no_voice(inbox: Inbox[AgentStatus], dispatch_id: str) -> None:
    with pytest.raises(AssertionError, match="no voice within"):
        await inbox.wait_for(is_state(dispatch_id, "voice"), NO_VOICE_S, "voice")


async def test_avatar_speaking_for_the_agent_is_its_voice_once_a_listener_is_there(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
    livekit_server: LiveKitServer,
) -> None:
    worker = workers.start("pool-avatar", extra_args=AVATAR_AGENT)
    room = "room-avatar-voice"
    async with statuses(nc) as inbox:
        dispatch_id = await dispatch(livekit_api, worker, room)
        joined = await inbox.wait_for(is_state(dispatch_id, "joined"), STEP_S, "joined")
        assert joined.identity
        async with avatar_for(livekit_server, room, joined.identity, TONE_PEAK) as avatar:
            # The agent subscribes to nothing itself: the worker subscribed it to its avatar.
            async with asyncio.timeout(STEP_S):
                await avatar.subscribed.wait()
            # Sound reaches the agent, but nobody but the agent and its avatar is in the room.
            await no_voice(inbox, dispatch_id)
            async with Listener(livekit_server, room) as listener:
                await listener.wait_audible(STEP_S)  # the listener really hears the avatar
                voice = await inbox.wait_for(is_state(dispatch_id, "voice"), STEP_S, "voice")
        assert voice.identity == joined.identity
        # The voice was the avatar's: the agent itself published no track.
        (agent,) = await agents_in_room(livekit_api, room)
        assert agent.identity == joined.identity and list(agent.tracks) == []
        await livekit_api.room.delete_room(lkapi.DeleteRoomRequest(room=room))


async def test_silent_avatar_is_no_voice_until_it_makes_a_sound(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
    livekit_server: LiveKitServer,
) -> None:
    worker = workers.start("pool-avatar-silent", extra_args=AVATAR_AGENT)
    room = "room-avatar-silence"
    async with statuses(nc) as inbox:
        dispatch_id = await dispatch(livekit_api, worker, room)
        joined = await inbox.wait_for(is_state(dispatch_id, "joined"), STEP_S, "joined")
        assert joined.identity
        async with (
            avatar_for(livekit_server, room, joined.identity, peak=0.0) as avatar,
            Listener(livekit_server, room) as listener,
        ):
            async with asyncio.timeout(STEP_S):
                await avatar.subscribed.wait()
            # Digital silence flows (packets and all) to the agent with a listener in the room.
            await no_voice(inbox, dispatch_id)
            assert listener.loudest_rms < AUDIBLE_RMS  # Opus comfort noise at most
            # The same room, the same avatar: sound now, and it is voice.
            avatar.peak = TONE_PEAK
            await inbox.wait_for(is_state(dispatch_id, "voice"), STEP_S, "voice")
        await livekit_api.room.delete_room(lkapi.DeleteRoomRequest(room=room))
