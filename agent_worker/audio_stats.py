"""Is an audio track really carrying sound? Read from the track's own WebRTC stats.

libwebrtc keeps, per local audio source, ``total_audio_energy`` (the integral of the squared
audio level, level in 0..1 of full scale) and ``total_samples_duration``; the outbound RTP stream
counts ``bytes_sent``. Between two readings, ``Δenergy / Δduration`` is the mean squared level of
what the encoder actually received, and growing ``bytes_sent`` shows packets leaving. Digital
silence has zero energy while still sending (small) packets, so energy, not bytes, tells sound
from silence. Both are measured below the agent's code, so any agent gets the same verdict.

A subscribed remote audio track has the same pair on its inbound RTP stream, measured on the
decoded audio, with ``bytes_received``: that is how audio an avatar publishes on the agent's
behalf is judged (:func:`read_received_sample`). livekit rtc's audio device pulls every
subscribed audio track, so the counters grow without anyone reading frames (verified on livekit
rtc 1.1.21: a 0.3-peak tone received adds 0.09 energy per second, digital silence 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# -40 dBFS: quiet speech peaks around -20..-6 dBFS, digital silence reads exactly 0 and Opus
# comfort noise stays far below this.
DEFAULT_LEVEL_THRESHOLD = 0.01


@dataclass(frozen=True)
class AudioSample:
    """One reading of an audio stream: energy and duration of its audio, and the RTP bytes that
    carried it (sent for a local track, received for a remote one)."""

    energy: float
    duration: float
    rtp_bytes: int


def read_sample(stats: Iterable[Any]) -> AudioSample | None:
    """Pick the media-source and outbound-RTP counters out of ``LocalAudioTrack.get_stats()``."""
    energy = duration = None
    bytes_sent = 0
    for entry in stats:
        kind = entry.WhichOneof("stats")
        if kind == "media_source" and entry.media_source.HasField("audio"):
            energy = entry.media_source.audio.total_audio_energy
            duration = entry.media_source.audio.total_samples_duration
        elif kind == "outbound_rtp":
            bytes_sent += entry.outbound_rtp.sent.bytes_sent
    if energy is None or duration is None:
        return None
    return AudioSample(energy=energy, duration=duration, rtp_bytes=bytes_sent)


def read_received_sample(stats: Iterable[Any]) -> AudioSample | None:
    """Pick the inbound-RTP audio counters out of ``RemoteAudioTrack.get_stats()`` (none before the
    first packets arrived)."""
    found = False
    energy = duration = 0.0
    bytes_received = 0
    for entry in stats:
        if entry.WhichOneof("stats") == "inbound_rtp" and entry.inbound_rtp.stream.kind == "audio":
            inbound = entry.inbound_rtp.inbound
            found = True
            energy += inbound.total_audio_energy
            duration += inbound.total_samples_duration
            bytes_received += inbound.bytes_received
    if not found:
        return None
    return AudioSample(energy=energy, duration=duration, rtp_bytes=bytes_received)


def level_between(before: AudioSample, after: AudioSample) -> float:
    """Root-mean-square audio level (0..1) of what was sent (or received) between two samples; 0 if
    no packets carried it."""
    d_duration = after.duration - before.duration
    d_energy = after.energy - before.energy
    if d_duration <= 0 or d_energy <= 0 or after.rtp_bytes <= before.rtp_bytes:
        return 0.0
    return math.sqrt(d_energy / d_duration)


def is_audible(before: AudioSample, after: AudioSample, threshold: float) -> bool:
    return level_between(before, after) >= threshold
