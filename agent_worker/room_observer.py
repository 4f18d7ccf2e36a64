"""Watch an agent's room from the outside: when did it join, and when did its voice reach someone.

Nothing here asks the agent's code: *joined* is the room's own connection state. *Voice* is
non-silent audio of the agent flowing to the room's listeners, seen one of two ways (the
measurement itself is :mod:`agent_worker.audio_stats`):

- **The agent's own audio**: a local audio track that a remote participant subscribed to
  (``local_track_subscribed``) and whose WebRTC stats show non-silent audio leaving.
- **Audio published on the agent's behalf**: avatar plugins (Hedra, Tavus, bey, LiveKit inference
  avatars) stream the agent's speech to the provider's participant, which publishes it with the
  attribute ``lk.publish_on_behalf`` = the agent's identity. The observer subscribes the agent to
  that participant's audio (unless it already is; it stays subscribed, as livekit-agents' default
  auto-subscribe would have it) and reads the track's inbound stats: the server forwards the
  same packets to every subscriber, so sound reaching the agent is sound the room's listeners get.
  Other participants' subscriptions are invisible to a client, so here a listener means presence:
  at both readings of a window, at least one remote participant that is neither an avatar (any
  ``lk.publish_on_behalf``) nor an agent is in the room — kind STANDARD, SIP or CONNECTOR, the
  kinds livekit-agents' ``AgentSession`` talks to by default.

Any agent plugged into the worker gets the same reports.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit import rtc

from agent_worker.audio_stats import (
    AudioSample,
    is_audible,
    level_between,
    read_received_sample,
    read_sample,
)

log = logging.getLogger(__name__)

# livekit.agents.types.ATTRIBUTE_PUBLISH_ON_BEHALF: set (by the avatar's token) on a participant that
# publishes audio and video for the agent whose identity it names.
PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
# Who can hear an avatar: livekit-agents' DEFAULT_PARTICIPANT_KINDS (users, phone callers,
# WhatsApp/Twilio connectors). Agents, ingress and bridges only bring media in; egress is hidden.
LISTENER_KINDS = frozenset(
    {
        rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
        rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
        rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
    }
)


def is_listener(participant: rtc.Participant) -> bool:
    """A participant who may hear the agent's avatar: a user's kind, and no avatar of anyone."""
    return participant.kind in LISTENER_KINDS and not participant.attributes.get(PUBLISH_ON_BEHALF)


class RoomObserver:
    def __init__(self, room: rtc.Room, *, level_threshold: float, poll_interval_s: float = 0.2) -> None:
        self._room = room
        self._threshold = level_threshold
        self._poll_interval_s = poll_interval_s
        self._connected = asyncio.Event()
        # Set on anything that may make voice measurable (a subscription, an avatar's track, a
        # participant coming or going); voice() sleeps on it while there is nothing to measure.
        self._changed = asyncio.Event()
        # Local audio tracks a remote participant subscribed to, by track sid.
        self._listened: dict[str, rtc.LocalAudioTrack] = {}
        # Subscribed audio tracks of participants publishing on the agent's behalf, by track sid,
        # with the publisher's identity.
        self._on_behalf: dict[str, tuple[str, rtc.Track]] = {}
        # The last inbound reading of each, the start of its current window.
        self._received: dict[str, AudioSample] = {}
        self._announced: set[str] = set()
        room.on("connection_state_changed", self._on_connection_state)
        room.on("local_track_subscribed", self._on_local_track_subscribed)
        room.on("participant_connected", self._on_participant_connected)
        room.on("participant_attributes_changed", self._on_attributes_changed)
        room.on("participant_disconnected", self._on_participant_disconnected)
        room.on("track_published", self._on_track_published)
        room.on("track_subscribed", self._on_track_subscribed)
        room.on("track_unsubscribed", self._on_track_unsubscribed)
        room.on("track_unpublished", self._on_track_unpublished)
        if room.isconnected():
            self._connected.set()

    # -- the agent's own tracks ------------------------------------------------------------------

    def _on_connection_state(self, state: Any) -> None:
        if state == rtc.ConnectionState.CONN_CONNECTED:
            self._connected.set()

    def _on_local_track_subscribed(self, track: rtc.Track) -> None:
        if isinstance(track, rtc.LocalAudioTrack):
            self._listened[track.sid] = track
            self._changed.set()

    # -- participants publishing on the agent's behalf -------------------------------------------

    def _agent_identity(self) -> str | None:
        try:
            return str(self._room.local_participant.identity)
        except Exception:  # not connected yet: no local participant
            return None

    def _speaks_for_agent(self, participant: rtc.Participant) -> bool:
        agent = self._agent_identity()
        return (
            agent is not None
            and participant.identity != agent
            and participant.attributes.get(PUBLISH_ON_BEHALF) == agent
        )

    def _adopt(self, participant: rtc.RemoteParticipant) -> None:
        """Measure ``participant``'s audio if it publishes for the agent (subscribing the agent to
        it when needed); forget its tracks if it does not (any more)."""
        if not self._speaks_for_agent(participant):
            self._forget(participant.identity)
            return
        if participant.identity not in self._announced:
            self._announced.add(participant.identity)
            log.info(
                "participant %s publishes on the agent's behalf; its audio counts as the agent's voice",
                participant.identity,
            )
        for publication in participant.track_publications.values():
            if publication.kind != rtc.TrackKind.KIND_AUDIO:
                continue
            track = publication.track
            if publication.subscribed and track is not None:
                self._measure(participant.identity, track)
            elif not publication.subscribed:
                # The agent must receive the audio to measure it; track_subscribed follows.
                publication.set_subscribed(True)

    def _measure(self, identity: str, track: rtc.Track) -> None:
        if track.sid not in self._on_behalf:
            self._on_behalf[track.sid] = (identity, track)
            self._changed.set()

    def _forget(self, identity: str) -> None:
        for sid in [sid for sid, (owner, _) in self._on_behalf.items() if owner == identity]:
            del self._on_behalf[sid]
        self._announced.discard(identity)

    def _on_participant_connected(self, participant: rtc.RemoteParticipant) -> None:
        self._adopt(participant)
        self._listeners_changed()

    def _on_attributes_changed(self, _changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity in self._room.remote_participants:
            self._adopt(self._room.remote_participants[participant.identity])
            self._listeners_changed()  # an avatar is no listener, and the other way round

    def _on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        self._forget(participant.identity)
        self._listeners_changed()

    def _on_track_published(
        self, _publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        self._adopt(participant)

    def _on_track_subscribed(
        self, track: rtc.Track, _publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and self._speaks_for_agent(participant):
            self._adopt(participant)

    def _on_track_unsubscribed(
        self, track: rtc.Track, _publication: rtc.RemoteTrackPublication, _participant: rtc.RemoteParticipant
    ) -> None:
        self._on_behalf.pop(track.sid, None)

    def _on_track_unpublished(
        self, publication: rtc.RemoteTrackPublication, _participant: rtc.RemoteParticipant
    ) -> None:
        self._on_behalf.pop(publication.sid, None)

    def _listener_present(self) -> bool:
        return any(is_listener(p) for p in self._room.remote_participants.values())

    def _listeners_changed(self) -> None:
        if not self._listener_present():
            # A window counts only if a listener was in the room all along: start again.
            self._received.clear()
        self._changed.set()

    # -- the verdicts ----------------------------------------------------------------------------

    async def joined(self) -> str:
        """Wait until the agent is connected to the room; return its participant identity."""
        await self._connected.wait()
        return str(self._room.local_participant.identity)

    async def voice(self) -> float:
        """Wait until non-silent audio of the agent reaches a listener: a subscribed local audio
        track sends it, or a participant publishing on the agent's behalf does while a listener is
        in the room. Return its level (0..1 of full scale)."""
        # Participants already in the room when the agent joined came without events.
        for participant in list(self._room.remote_participants.values()):
            self._adopt(participant)
        sent: dict[str, AudioSample] = {}
        while True:
            self._changed.clear()
            for sid, track in list(self._listened.items()):
                sample = read_sample(await track.get_stats())
                if sample is None:
                    continue
                before = sent.get(sid)
                sent[sid] = sample
                # The first reading after a subscription is the baseline: sound sent before anyone
                # listened does not count.
                if before is not None and is_audible(before, sample, self._threshold):
                    return level_between(before, sample)
            measuring_on_behalf = bool(self._on_behalf) and self._listener_present()
            if measuring_on_behalf:
                level = await self._on_behalf_level()
                if level is not None:
                    return level
            else:
                self._received.clear()
            if self._listened or measuring_on_behalf:
                await asyncio.sleep(self._poll_interval_s)
            else:
                await self._changed.wait()

    async def _on_behalf_level(self) -> float | None:
        previous = self._received
        for sid in set(previous) - set(self._on_behalf):
            del previous[sid]
        for sid, (identity, track) in list(self._on_behalf.items()):
            try:
                sample = read_received_sample(await track.get_stats())
            except Exception as exc:  # unsubscribed or gone while we asked
                log.debug("no stats for %s's track %s: %s", identity, sid, exc)
                previous.pop(sid, None)
                continue
            if sample is None:
                continue
            before = previous.get(sid)
            previous[sid] = sample
            if before is not None and is_audible(before, sample, self._threshold):
                level = level_between(before, sample)
                log.info("voice published on the agent's behalf by %s (level %.3f)", identity, level)
                return level
        return None
