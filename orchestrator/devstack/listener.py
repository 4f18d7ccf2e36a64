"""A user in a demo room: joins with the LiveKit rtc SDK and listens to the agent's audio.

Its subscription is what lets the worker report ``voice`` (the agent's track is heard by a remote
participant), and its own measurement says whether sound — not silence — really arrives.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
from livekit import api as lk
from livekit import rtc

# Speech peaks far above this; decoded silence / comfort noise stays far below (-40 dBFS RMS).
AUDIBLE_RMS = 0.01
AUDIBLE_FRAMES = 10  # 100 ms of sound, not one stray frame


class RoomListener:
    def __init__(self, ws_url: str, api_key: str, api_secret: str, room: str, identity: str) -> None:
        self._ws_url = ws_url
        self._token = (
            lk.AccessToken(api_key, api_secret)
            .with_identity(identity)
            .with_grants(lk.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )
        self.room_name = room
        self.room = rtc.Room()
        self.audible_frames = 0
        self.heard = asyncio.Event()
        self._streams: list[rtc.AudioStream] = []
        self._tracks: asyncio.Queue[rtc.AudioStream] = asyncio.Queue()

    async def connect(self, timeout_s: float = 20.0) -> None:
        self.room.on("track_subscribed", self._on_track)
        async with asyncio.timeout(timeout_s):
            await self.room.connect(self._ws_url, self._token)

    def _on_track(self, track: rtc.Track, _pub: Any, _participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            stream = rtc.AudioStream(track)
            self._streams.append(stream)
            self._tracks.put_nowait(stream)

    async def listen(self) -> None:
        """Read every agent audio track that arrives, until cancelled (run it in a TaskGroup)."""
        async with asyncio.TaskGroup() as tg:
            while True:
                stream = await self._tracks.get()
                tg.create_task(self._read(stream))

    async def _read(self, stream: rtc.AudioStream) -> None:
        async for event in stream:
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64) / 32768.0
            rms = math.sqrt(float(np.mean(samples**2))) if samples.size else 0.0
            if rms >= AUDIBLE_RMS:
                self.audible_frames += 1
                if self.audible_frames >= AUDIBLE_FRAMES:
                    self.heard.set()

    async def close(self) -> None:
        for stream in self._streams:
            await stream.aclose()
        await self.room.disconnect()
