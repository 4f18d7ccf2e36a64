"""The drills' agent (``--entrypoint tests.drills.drill_agent:entrypoint``): cheap at scale.

It joins the room and stays. Only when a listener (a non-agent participant) is in the room does it
publish a track and play a tone, so a burst of 200 rooms without listeners costs 200 idle room
connections, not 200 audio encoders on a 2-core machine; the rooms with listeners still go through
the real voice path (subscribed track, energy in the WebRTC stats) to ``speaking``.
"""

from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc
from livekit.agents import AutoSubscribe, JobContext

RATE = 48_000
FRAME = 480  # 10 ms


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
    room = ctx.room
    listener = asyncio.Event()

    def check(*_: object) -> None:
        if any(
            p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT for p in room.remote_participants.values()
        ):
            listener.set()

    room.on("participant_connected", check)
    check()
    task = asyncio.create_task(_voice_when_heard(room, listener))

    async def stop() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    ctx.add_shutdown_callback(stop)


async def _voice_when_heard(room: rtc.Room, listener: asyncio.Event) -> None:
    await listener.wait()
    source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("drill-tone", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    t = np.arange(FRAME) / RATE
    try:
        phase = 0
        while room.isconnected():
            samples = (0.3 * np.sin(2 * np.pi * 440.0 * (t + phase * FRAME / RATE)) * 32767).astype(np.int16)
            frame = rtc.AudioFrame(samples.tobytes(), RATE, 1, FRAME)
            await source.capture_frame(frame)  # paced by the source's queue: real time
            phase += 1
    finally:
        await source.aclose()
