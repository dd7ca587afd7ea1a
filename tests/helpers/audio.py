"""Small real audio signals and MP3 bytes for data tests (written to files by the tests themselves)."""

from __future__ import annotations

import lameenc
import numpy as np


def tone(seconds: float, sample_rate: int = 48_000, channels: int = 2, freq: float = 440.0) -> np.ndarray:
    """A quiet sine with a little noise, float32 (frames, channels) as soundfile writes it."""
    rng = np.random.default_rng(int(freq))
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def mp3_bytes(frames_by_channels: np.ndarray, sample_rate: int = 48_000, bitrate: int = 128) -> bytes:
    """Encode (frames, channels) float audio to MP3 with lameenc."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(frames_by_channels.shape[1])
    encoder.set_quality(7)
    pcm = (np.clip(frames_by_channels, -1, 1) * 32767).astype(np.int16)
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())
