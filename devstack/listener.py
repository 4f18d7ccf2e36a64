"""A user in a room: joins with the LiveKit rtc SDK and listens to the agents' audio.

Its subscription is what lets the worker report ``voice`` (the agent's track is heard by a remote
participant), and its own measurement says whether sound — not silence — really arrives. The dev
stack's demo rooms, the tests and the bench all listen through this one class; the bench's timing
listener refines :meth:`RoomListener.on_frame`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import numpy as np
from livekit import api as lk
from livekit import rtc

from agent_worker.rtc_native_logs import quiet_ffi_client
from devstack.livekit_server import LiveKitServer

# Speech from espeak-ng peaks at -20..-6 dBFS with an RMS around 0.05-0.2 of full scale over a
# 10 ms frame; what an idle Opus track decodes to (silence, comfort noise) stays below 0.001.
# 0.01 (-40 dBFS) sits an order of magnitude from both.
AUDIBLE_RMS = 0.01
AUDIBLE_FRAMES = 10  # 100 ms of sound, not one stray frame
CONNECT_TIMEOUT_S = 20.0
DISCONNECT_TIMEOUT_S = 5.0


def join_token(livekit: LiveKitServer, room: str, identity: str, *, can_publish: bool = True) -> str:
    grants = lk.VideoGrants(room_join=True, room=room, can_publish=can_publish)
    return (
        lk.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


def frame_rms(frame: rtc.AudioFrame) -> float:
    """Root mean square of a 16-bit PCM frame, as a fraction of full scale (0..1)."""
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64) / 32768.0
    return math.sqrt(float(np.mean(samples**2))) if samples.size else 0.0


class RoomListener:
    """Joins ``room`` as ``identity`` and reads every audio track it is given, one task per track,
    until :meth:`close` (or the end of an ``async with`` block)."""

    def __init__(self, livekit: LiveKitServer, room: str, identity: str = "listener") -> None:
        self._livekit = livekit
        self.room_name = room
        self._identity = identity
        self.room = rtc.Room()
        self.loudest_rms = 0.0
        self.audible_frames = 0
        self.heard = asyncio.Event()  # set after AUDIBLE_FRAMES audible frames
        self._readers: list[asyncio.Task[None]] = []
        self.room.on("track_subscribed", self._on_track)

    async def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        token = join_token(self._livekit, self.room_name, self._identity)
        quiet_ffi_client()  # a bench's 50 listeners in one process: see agent_worker/rtc_native_logs.py
        async with asyncio.timeout(timeout_s):
            await self.room.connect(self._livekit.ws_url, token)

    async def __aenter__(self) -> RoomListener:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def on_frame(self, identity: str, rms: float) -> bool:
        """One decoded frame from ``identity``'s track; False stops reading that track."""
        self.loudest_rms = max(self.loudest_rms, rms)
        if rms >= AUDIBLE_RMS:
            self.audible_frames += 1
            if self.audible_frames >= AUDIBLE_FRAMES:
                self.heard.set()
        return True

    async def wait_audible(self, within_s: float) -> None:
        async with asyncio.timeout(within_s):
            await self.heard.wait()

    def _on_track(self, track: rtc.Track, _pub: Any, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            stream = rtc.AudioStream(track)
            self._readers.append(asyncio.create_task(self._read(stream, participant.identity)))

    async def _read(self, stream: rtc.AudioStream, identity: str) -> None:
        try:
            async for event in stream:
                if not self.on_frame(identity, frame_rms(event.frame)):
                    return
        finally:
            await stream.aclose()

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        # Leaving is cleanup: a slow or failed disconnect says nothing about what was heard.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await self.room.disconnect()
