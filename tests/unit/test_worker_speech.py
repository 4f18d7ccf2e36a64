"""The default agent's voice: espeak-ng speech resampled to 48 kHz, or the labelled tone."""

from __future__ import annotations

import shutil

import numpy as np

from agent_worker import speech


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))


async def test_espeak_speaks_audibly_at_the_track_rate() -> None:
    assert shutil.which("espeak-ng"), (
        "espeak-ng is missing: scripts/setup installs it (apt-get install espeak-ng)"
    )
    samples = await speech.synthesize("Hello from Switchboard.")
    seconds = len(samples) / speech.SAMPLE_RATE
    assert 0.8 < seconds < 5.0
    assert _rms(samples) > 0.02  # clearly audible, far above the 0.01 voice threshold


def test_tone_has_no_clicks_and_is_audible() -> None:
    tone = speech.tone(1.0)
    assert len(tone) == speech.SAMPLE_RATE and tone[0] == 0 and abs(int(tone[-1])) < 100
    assert _rms(tone) > 0.1


def test_frames_are_20ms_and_padded() -> None:
    frames = list(speech.frames(np.ones(1000, dtype=np.int16)))
    assert [f.samples_per_channel for f in frames] == [960, 960]
    assert frames[0].sample_rate == speech.SAMPLE_RATE
