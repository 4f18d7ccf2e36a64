"""Local speech for the default agent: espeak-ng when installed, else a clearly labelled tone.

espeak-ng (Debian package ``espeak-ng``) writes a 16-bit mono WAV to stdout; we resample it to the
track's rate with livekit's own resampler. No cloud key, no model download.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import shutil
import subprocess
import wave
from collections.abc import Iterator

import numpy as np
from livekit import rtc

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
FRAME_MS = 20
SYNTH_TIMEOUT_S = 10.0


class SpeechError(RuntimeError):
    pass


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


async def synthesize(text: str, *, voice: str = "en", words_per_minute: int = 165) -> np.ndarray:
    """Speak ``text`` with espeak-ng; int16 mono samples at :data:`SAMPLE_RATE` (read-only).

    The same text always sounds the same, so a process synthesizes each once: its later jobs (a
    failover's burst of them above all) start speaking without waiting for espeak-ng."""
    return await asyncio.to_thread(synthesize_now, text, voice, words_per_minute)


@functools.lru_cache(maxsize=64)
def synthesize_now(text: str, voice: str = "en", words_per_minute: int = 165) -> np.ndarray:
    """:func:`synthesize`, blocking (the default agent's prewarm runs it at the worker's start)."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise SpeechError("espeak-ng is not installed")
    # argv, never a shell: the text comes from config and must not be interpreted.
    try:
        done = subprocess.run(
            [binary, "--stdout", "-v", voice, "-s", str(words_per_minute), "--", text],
            capture_output=True,
            timeout=SYNTH_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SpeechError(f"espeak-ng took longer than {SYNTH_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        raise SpeechError(
            f"espeak-ng exited with {done.returncode}: {done.stderr.decode(errors='replace')[:200]}"
        )
    samples = _resample_wav(done.stdout)
    samples.setflags(write=False)  # shared by every job of the process
    return samples


def _resample_wav(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav)) as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        pcm = w.readframes(w.getnframes())
    if width != 2:
        raise SpeechError(f"espeak-ng produced {8 * width}-bit audio; expected 16-bit")
    samples = np.frombuffer(pcm, dtype=np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate == SAMPLE_RATE:
        return samples
    resampler = rtc.AudioResampler(rate, SAMPLE_RATE, num_channels=1)
    out = [bytes(f.data) for f in resampler.push(bytearray(samples.tobytes()))]
    out += [bytes(f.data) for f in resampler.flush()]
    return np.frombuffer(b"".join(out), dtype=np.int16)


def tone(seconds: float = 1.2, hz: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    """The fallback when espeak-ng is missing: a plain sine, announced as such in logs and attributes."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    envelope = np.minimum(1.0, np.minimum(t, seconds - t) / 0.05)  # no clicks at either end
    return (amplitude * 32767 * envelope * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def frames(samples: np.ndarray) -> Iterator[rtc.AudioFrame]:
    per_frame = SAMPLE_RATE * FRAME_MS // 1000
    for start in range(0, len(samples), per_frame):
        chunk = samples[start : start + per_frame]
        if len(chunk) < per_frame:
            chunk = np.pad(chunk, (0, per_frame - len(chunk)))
        yield rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, per_frame)
