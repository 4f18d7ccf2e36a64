"""Watch an agent's room from the outside: when did it join, and when did its voice reach someone.

Nothing here asks the agent's code: *joined* is the room's own connection state, *voice* is a
local audio track that a remote participant subscribed to (``local_track_subscribed``) and whose
WebRTC stats show non-silent audio leaving (see :mod:`agent_worker.audio_stats`). Any agent
plugged into the worker gets the same reports.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit import rtc

from agent_worker.audio_stats import AudioSendSample, is_audible, level_between, read_sample

log = logging.getLogger(__name__)


class RoomObserver:
    def __init__(self, room: rtc.Room, *, level_threshold: float, poll_interval_s: float = 0.2) -> None:
        self._room = room
        self._threshold = level_threshold
        self._poll_interval_s = poll_interval_s
        self._connected = asyncio.Event()
        self._subscribed = asyncio.Event()
        # Local audio tracks a remote participant subscribed to, by track sid.
        self._listened: dict[str, rtc.LocalAudioTrack] = {}
        room.on("connection_state_changed", self._on_connection_state)
        room.on("local_track_subscribed", self._on_local_track_subscribed)
        if room.isconnected():
            self._connected.set()

    def _on_connection_state(self, state: Any) -> None:
        if state == rtc.ConnectionState.CONN_CONNECTED:
            self._connected.set()

    def _on_local_track_subscribed(self, track: rtc.Track) -> None:
        if isinstance(track, rtc.LocalAudioTrack):
            self._listened[track.sid] = track
            self._subscribed.set()

    async def joined(self) -> str:
        """Wait until the agent is connected to the room; return its participant identity."""
        await self._connected.wait()
        return str(self._room.local_participant.identity)

    async def voice(self) -> float:
        """Wait until a subscribed local audio track sends non-silent audio; return its level (0..1)."""
        await self._subscribed.wait()
        previous: dict[str, AudioSendSample] = {}
        while True:
            for sid, track in list(self._listened.items()):
                sample = read_sample(await track.get_stats())
                if sample is None:
                    continue
                before = previous.get(sid)
                previous[sid] = sample
                # The first reading after a subscription is the baseline: sound sent before anyone
                # listened does not count.
                if before is not None and is_audible(before, sample, self._threshold):
                    return level_between(before, sample)
            await asyncio.sleep(self._poll_interval_s)
