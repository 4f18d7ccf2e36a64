"""The agent a pool runs when no ``--entrypoint`` is given: it speaks, with no cloud key at all.

A spoken greeting as soon as it is in the room, then a short phrase every few seconds while a
listener (any non-agent participant) is present. espeak-ng does the talking; without it the agent
plays a tone and says so (log line and the participant attribute ``switchboard.voice=tone``).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from livekit import rtc
from livekit.agents import AutoSubscribe, JobContext, JobProcess

from agent_worker import speech

log = logging.getLogger(__name__)

GREETING = "Hello, this is the Switchboard agent. I can hear you are here."
PHRASES = ("Still here.", "Switchboard agent, listening.", "All good on this line.")
PHRASE_INTERVAL_S = 4.0
TRACK_NAME = "switchboard-voice"


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
    voices = await _prepare_voices()
    room = ctx.room
    # A short queue keeps what we capture close to what is sent (the default buffers a second).
    source = rtc.AudioSource(speech.SAMPLE_RATE, 1, queue_size_ms=200)
    track = rtc.LocalAudioTrack.create_audio_track(TRACK_NAME, source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    speaking = asyncio.create_task(_speak(room, source, voices), name="default_agent_speak")

    async def stop_speaking() -> None:
        # The job's shutdown owns the speaking task: cancel it and wait, then free the source.
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)
        await source.aclose()

    ctx.add_shutdown_callback(stop_speaking)
    # Said once the voice is on its way: rtc 1.1.21 now and then misses this request's answer and
    # returns 5 s later (livekit-server answered within 1 ms). Said before publishing, it held the
    # voice back those 5 s: 1 failed-over room in about 20 in the failover bench.
    await room.local_participant.set_attributes({"switchboard.voice": voices.kind})


class _Voices:
    def __init__(self, kind: str, greeting: np.ndarray, phrases: list[np.ndarray]) -> None:
        self.kind = kind
        self.greeting = greeting
        self.phrases = phrases


async def _prepare_voices() -> _Voices:
    if not speech.espeak_available():
        log.warning("espeak-ng is not installed: the default agent plays a TONE instead of speech")
        return _Voices("tone", speech.tone(), [speech.tone(0.4, 660.0)])
    # Made by the prewarm at the worker's start (cached per process): no wait here then.
    greeting = await speech.synthesize(GREETING)
    phrases = [await speech.synthesize(p) for p in PHRASES]
    return _Voices("espeak-ng", greeting, phrases)


def prewarm(proc: JobProcess) -> None:
    """The default agent's prewarm: speak its lines once, before any job, so that a job (a
    failover's burst of them above all) is in its room and speaking without waiting for espeak-ng."""
    del proc  # the voices are cached by speech itself, for every job of this process
    if speech.espeak_available():
        for text in (GREETING, *PHRASES):
            speech.synthesize_now(text)


async def _speak(room: rtc.Room, source: rtc.AudioSource, voices: _Voices) -> None:
    # Someone new subscribed to our voice: greet them now rather than at the next phrase.
    new_listener = asyncio.Event()
    room.on("local_track_subscribed", lambda _track: new_listener.set())
    await _play(source, voices.greeting)
    turn = 0
    while room.isconnected():
        try:
            async with asyncio.timeout(PHRASE_INTERVAL_S):
                await new_listener.wait()
        except TimeoutError:
            if _listeners(room):
                await _play(source, voices.phrases[turn % len(voices.phrases)])
                turn += 1
        else:
            new_listener.clear()
            await _play(source, voices.greeting)


def _listeners(room: rtc.Room) -> int:
    return sum(
        1 for p in room.remote_participants.values() if p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    )


async def _play(source: rtc.AudioSource, samples: np.ndarray) -> None:
    for frame in speech.frames(samples):
        await source.capture_frame(frame)  # paced by the source's queue: real time
    await source.wait_for_playout()
