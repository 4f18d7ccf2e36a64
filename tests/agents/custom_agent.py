"""A user's own livekit-agents entrypoint (``--entrypoint tests.agents.custom_agent:entrypoint``).

It knows nothing about Switchboard: it plays a tone of its own and publishes what metadata it was
given (length and SHA-256, as participant attributes) so tests can check it arrived untouched.
"""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
from livekit import rtc
from livekit.agents import JobContext

RATE = 48_000
FRAME = 480


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    metadata = ctx.job.metadata
    await ctx.room.local_participant.set_attributes(
        {
            "custom.metadata_sha256": hashlib.sha256(metadata.encode()).hexdigest(),
            "custom.metadata_length": str(len(metadata)),
        }
    )
    source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("custom-tone", source)
    await ctx.room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    hum = asyncio.create_task(_hum(source))

    async def stop() -> None:
        hum.cancel()
        await asyncio.gather(hum, return_exceptions=True)

    ctx.add_shutdown_callback(stop)


async def _hum(source: rtc.AudioSource) -> None:
    t = np.arange(FRAME) / RATE
    n = 0
    while True:
        wave = 0.25 * 32767 * np.sin(2 * np.pi * 330 * (t + n * FRAME / RATE))
        await source.capture_frame(rtc.AudioFrame(wave.astype(np.int16).tobytes(), RATE, 1, FRAME))
        n += 1
