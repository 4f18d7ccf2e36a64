"""Voice published on the agent's behalf (provider avatars): which participants count, what the
observer subscribes to, and when a listener is in the room. A fake room drives the observer with
the events and stats livekit rtc would produce; the real thing is
tests/integration/test_worker_avatar_voice.py."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, cast

from livekit import rtc
from livekit.rtc._proto import stats_pb2

from agent_worker.audio_stats import AudioSample, read_received_sample
from agent_worker.room_observer import PUBLISH_ON_BEHALF, RoomObserver, is_listener

AGENT = "agent-AJ_1"
STANDARD = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
AGENT_KIND = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
THRESHOLD = 0.01


def _inbound(energy: float, duration: float, bytes_received: int, kind: str = "audio") -> stats_pb2.RtcStats:
    entry = stats_pb2.RtcStats()
    entry.inbound_rtp.stream.kind = kind
    entry.inbound_rtp.inbound.total_audio_energy = energy
    entry.inbound_rtp.inbound.total_samples_duration = duration
    entry.inbound_rtp.inbound.bytes_received = bytes_received
    return entry


def test_reads_inbound_audio_counters() -> None:
    codec = stats_pb2.RtcStats()
    codec.codec.codec.mime_type = "audio/opus"
    stats = [codec, _inbound(0.0, 0.0, 9, kind="video"), _inbound(0.09, 2.0, 4000)]
    assert read_received_sample(stats) == AudioSample(0.09, 2.0, 4000)


def test_no_inbound_audio_yet_means_no_sample() -> None:
    assert read_received_sample([]) is None
    assert read_received_sample([_inbound(0.0, 0.0, 9, kind="video")]) is None


class FakeRoom:
    def __init__(self) -> None:
        self.handlers: dict[str, list[Any]] = {}
        self.local_participant = _Local(AGENT)
        self.remote_participants: dict[str, FakeParticipant] = {}

    def on(self, event: str, handler: Any) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def emit(self, event: str, *args: Any) -> None:
        for handler in self.handlers.get(event, []):
            handler(*args)

    def isconnected(self) -> bool:
        return True

    def join(self, participant: FakeParticipant) -> FakeParticipant:
        self.remote_participants[participant.identity] = participant
        self.emit("participant_connected", participant)
        return participant

    def leave(self, participant: FakeParticipant) -> None:
        del self.remote_participants[participant.identity]
        self.emit("participant_disconnected", participant)

    def set_attributes(self, participant: FakeParticipant, attributes: dict[str, str]) -> None:
        participant.attributes = attributes
        self.emit("participant_attributes_changed", attributes, participant)

    def publish(self, participant: FakeParticipant, track: FakeTrack) -> FakePublication:
        publication = FakePublication(self, participant, track)
        participant.track_publications[track.sid] = publication
        self.emit("track_published", publication, participant)
        return publication


@dataclass
class _Local:
    identity: str


@dataclass
class FakeParticipant:
    identity: str
    kind: int = STANDARD
    attributes: dict[str, str] = field(default_factory=dict)
    track_publications: dict[str, FakePublication] = field(default_factory=dict)


def avatar(
    identity: str = "hedra-avatar", on_behalf_of: str = AGENT, kind: int = AGENT_KIND
) -> FakeParticipant:
    return FakeParticipant(identity, kind, {PUBLISH_ON_BEHALF: on_behalf_of})


class FakeTrack:
    """A remote audio track whose inbound counters advance by 20 ms of audio at ``level`` (RMS)
    on every stats reading."""

    def __init__(self, sid: str, level: float) -> None:
        self.sid = sid
        self.kind = rtc.TrackKind.KIND_AUDIO
        self.level = level
        self.readings = 0
        self.read = asyncio.Event()
        self._energy = self._duration = 0.0
        self._bytes = 0

    async def get_stats(self) -> list[stats_pb2.RtcStats]:
        self._duration += 0.02
        self._energy += self.level**2 * 0.02
        self._bytes += 60
        self.readings += 1
        self.read.set()
        return [_inbound(self._energy, self._duration, self._bytes)]

    async def readings_at_least(self, n: int) -> None:
        while self.readings < n:
            self.read.clear()
            await self.read.wait()


class FakePublication:
    def __init__(self, room: FakeRoom, participant: FakeParticipant, track: FakeTrack) -> None:
        self._room, self._participant, self._track = room, participant, track
        self.sid = track.sid
        self.kind = track.kind
        self.subscribed = False
        self.track: FakeTrack | None = None
        self.subscribe_requests: list[bool] = []

    def set_subscribed(self, subscribed: bool) -> None:
        self.subscribe_requests.append(subscribed)

    def complete_subscription(self) -> None:
        """What livekit rtc does once the server subscribed the agent."""
        self.subscribed, self.track = True, self._track
        self._room.emit("track_subscribed", self._track, self, self._participant)

    def unsubscribe(self) -> None:
        self.subscribed, self.track = False, None
        self._room.emit("track_unsubscribed", self._track, self, self._participant)


def observe(room: FakeRoom) -> tuple[RoomObserver, asyncio.Task[float]]:
    observer = RoomObserver(cast(rtc.Room, room), level_threshold=THRESHOLD, poll_interval_s=0.001)
    return observer, asyncio.create_task(observer.voice())


async def settle(task: asyncio.Task[float]) -> None:
    """Let the observer run until it waits for something (no timers involved)."""
    for _ in range(50):
        await asyncio.sleep(0)
    assert not task.done(), task


async def test_avatar_in_the_room_before_the_agent_is_subscribed_measured_and_heard() -> None:
    room = FakeRoom()
    speaker = room.join(avatar())
    publication = room.publish(speaker, FakeTrack("TR_avatar_audio", level=0.3))
    room.join(FakeParticipant("user-1"))
    _, voice = observe(room)
    await settle(voice)
    assert publication.subscribe_requests == [True]  # the agent was not subscribed: now it asks
    publication.complete_subscription()
    async with asyncio.timeout(5):
        level = await voice
    assert math.isclose(level, 0.3)


async def test_an_already_subscribed_avatar_track_is_left_alone() -> None:
    room = FakeRoom()
    speaker = room.join(avatar())
    publication = room.publish(speaker, FakeTrack("TR_a", level=0.3))
    publication.complete_subscription()  # the agent auto-subscribes, as livekit-agents does by default
    room.join(FakeParticipant("user-1"))
    _, voice = observe(room)
    async with asyncio.timeout(5):
        await voice
    assert publication.subscribe_requests == []


async def test_no_voice_until_a_listener_is_in_the_room() -> None:
    room = FakeRoom()
    speaker = room.join(avatar())
    track = FakeTrack("TR_a", level=0.3)
    room.publish(speaker, track).complete_subscription()
    # Neither another agent nor another agent's avatar (even one that joined as STANDARD) listens.
    room.join(FakeParticipant("agent-AJ_other", AGENT_KIND))
    room.join(avatar("tavus-avatar", on_behalf_of="agent-AJ_other", kind=STANDARD))
    _, voice = observe(room)
    await settle(voice)
    assert track.readings == 0  # nothing measured while nobody could hear it
    user = room.join(FakeParticipant("user-1"))
    assert is_listener(cast(rtc.Participant, user))
    async with asyncio.timeout(5):
        await voice


async def test_a_listener_leaving_restarts_the_window() -> None:
    room = FakeRoom()
    speaker = room.join(avatar())
    track = FakeTrack("TR_a", level=0.0)
    room.publish(speaker, track).complete_subscription()
    user = room.join(FakeParticipant("user-1"))
    _, voice = observe(room)
    await track.readings_at_least(3)
    room.leave(user)
    await settle(voice)
    track.level = 0.3  # sound while nobody is there...
    before = track.readings
    await settle(voice)
    assert track.readings == before  # ...is not read, and the next window starts with a new baseline
    room.join(FakeParticipant("user-2", rtc.ParticipantKind.PARTICIPANT_KIND_SIP))
    async with asyncio.timeout(5):
        await voice
    assert track.readings >= before + 2


async def test_attribute_arriving_after_join_turns_a_participant_into_the_agents_avatar() -> None:
    room = FakeRoom()
    _, voice = observe(room)
    # The avatar connects without the attribute: for now it is a user (a listener), not an avatar.
    speaker = room.join(FakeParticipant("bey-avatar", STANDARD))
    publication = room.publish(speaker, FakeTrack("TR_a", level=0.3))
    await settle(voice)
    assert publication.subscribe_requests == []
    room.set_attributes(speaker, {PUBLISH_ON_BEHALF: AGENT})
    assert publication.subscribe_requests == [True]
    publication.complete_subscription()
    await settle(voice)  # the avatar is its own only "listener": not enough
    room.join(FakeParticipant("user-1"))
    async with asyncio.timeout(5):
        await voice


async def test_silent_avatar_is_not_voice() -> None:
    room = FakeRoom()
    speaker = room.join(avatar())
    track = FakeTrack("TR_a", level=0.0)
    room.publish(speaker, track).complete_subscription()
    room.join(FakeParticipant("user-1"))
    _, voice = observe(room)
    await track.readings_at_least(20)
    assert not voice.done()
    track.level = 0.001  # -60 dBFS: below the threshold
    await track.readings_at_least(40)
    assert not voice.done()
    voice.cancel()


async def test_avatar_of_another_agent_is_ignored() -> None:
    room = FakeRoom()
    other = room.join(avatar("hedra-avatar", on_behalf_of="agent-AJ_other"))
    track = FakeTrack("TR_a", level=0.3)
    publication = room.publish(other, track)
    room.join(FakeParticipant("user-1"))
    _, voice = observe(room)
    await settle(voice)
    publication.complete_subscription()  # even when the agent subscribed to it itself
    await settle(voice)
    assert publication.subscribe_requests == [] and track.readings == 0
    voice.cancel()


async def test_tracks_are_forgotten_when_unsubscribed_or_the_attribute_goes() -> None:
    room = FakeRoom()
    speaker = room.join(avatar())
    track = FakeTrack("TR_a", level=0.0)
    publication = room.publish(speaker, track)
    publication.complete_subscription()
    room.join(FakeParticipant("user-1"))
    _, voice = observe(room)
    await track.readings_at_least(2)
    publication.unsubscribe()
    await settle(voice)
    read = track.readings
    room.set_attributes(speaker, {})  # no longer the agent's avatar: never resubscribed or read
    track.level = 0.3
    await settle(voice)
    assert track.readings == read and publication.subscribe_requests == []
    voice.cancel()
