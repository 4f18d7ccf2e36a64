"""An agent written for livekit-agents the way its docs declare one, knowing nothing of Switchboard.

An ``AgentServer`` with settings of its own, a prewarm in ``setup_fnc`` that loads a chime from a
WAV file into ``proc.userdata``, an ``on_request`` that names the participant, and an
``rtc_session`` entrypoint under an agent_name of its own. ``python prewarmed_agent.py start``
would run it with livekit-agents alone; ``switchboard worker --entrypoint
tests.agents.prewarmed_agent:server`` runs it in a pool, unchanged.

The entrypoint plays the prewarmed chime and publishes what it got from the prewarm as participant
attributes, so a test can check through LiveKit that the data reached it: the chime's SHA-256,
how many times the prewarm ran in this process, and the identity of the object.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import wave

import numpy as np
from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest, cli

CHIME_ENV = "PREWARMED_AGENT_CHIME_WAV"
RATE = 48_000
FRAME = 480  # 10 ms
PREWARM_RUNS = 0  # in this process

# Settings a standalone deployment might have; under a pool the pool decides them.
server = AgentServer(load_threshold=0.5, num_idle_processes=3, port=8081)


def prewarm(proc: JobProcess) -> None:
    global PREWARM_RUNS
    with wave.open(os.environ[CHIME_ENV], "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, RATE):
            raise ValueError(f"{CHIME_ENV}: expected 48 kHz mono 16-bit PCM")
        chime = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    PREWARM_RUNS += 1
    proc.userdata["chime"] = chime


server.setup_fnc = prewarm


async def on_request(req: JobRequest) -> None:
    await req.accept(
        name="Chime",
        identity="chime-agent",
        metadata=req.job.metadata,
        attributes={"chime.greeting": "ding", "switchboard.pool": "not-mine"},
    )


@server.rtc_session(agent_name="chime-agent", on_request=on_request)
async def entrypoint(ctx: JobContext) -> None:
    chime: np.ndarray = ctx.proc.userdata["chime"]
    await ctx.connect()
    await ctx.room.local_participant.set_attributes(
        {
            "chime.sha256": hashlib.sha256(chime.tobytes()).hexdigest(),
            "chime.prewarm_runs": str(PREWARM_RUNS),
            "chime.object": f"{os.getpid()}-{id(chime)}",
        }
    )
    source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("chime", source)
    await ctx.room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    playing = asyncio.create_task(_play_forever(source, chime))

    async def stop() -> None:
        playing.cancel()
        await asyncio.gather(playing, return_exceptions=True)

    ctx.add_shutdown_callback(stop)


async def _play_forever(source: rtc.AudioSource, chime: np.ndarray) -> None:
    while True:
        for start in range(0, len(chime) - FRAME + 1, FRAME):
            frame = chime[start : start + FRAME]
            await source.capture_frame(rtc.AudioFrame(frame.tobytes(), RATE, 1, FRAME))


if __name__ == "__main__":
    cli.run_app(server)
