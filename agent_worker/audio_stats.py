"""Is a published audio track really sending sound? Read from the track's own WebRTC stats.

libwebrtc keeps, per local audio source, ``total_audio_energy`` (the integral of the squared
audio level, level in 0..1 of full scale) and ``total_samples_duration``; the outbound RTP stream
counts ``bytes_sent``. Between two readings, ``Δenergy / Δduration`` is the mean squared level of
what the encoder actually received, and growing ``bytes_sent`` shows packets leaving. Digital
silence has zero energy while still sending (small) packets, so energy, not bytes, tells sound
from silence. Both are measured below the agent's code, so any agent gets the same verdict.
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
class AudioSendSample:
    energy: float
    duration: float
    bytes_sent: int


def read_sample(stats: Iterable[Any]) -> AudioSendSample | None:
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
    return AudioSendSample(energy=energy, duration=duration, bytes_sent=bytes_sent)


def level_between(before: AudioSendSample, after: AudioSendSample) -> float:
    """Root-mean-square audio level (0..1) of what was sent between two samples; 0 if nothing was."""
    d_duration = after.duration - before.duration
    d_energy = after.energy - before.energy
    if d_duration <= 0 or d_energy <= 0 or after.bytes_sent <= before.bytes_sent:
        return 0.0
    return math.sqrt(d_energy / d_duration)


def is_audible(before: AudioSendSample, after: AudioSendSample, threshold: float) -> bool:
    return level_between(before, after) >= threshold
