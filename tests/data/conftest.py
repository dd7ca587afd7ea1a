"""Builders for small real audio files (WAV/FLAC/MP3/Opus) that data-prep tests write into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lameenc
import numpy as np
import pytest
import soundfile as sf


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


AudioWriter = Callable[..., Path]


@pytest.fixture
def write_audio() -> AudioWriter:
    """write_audio(path, seconds=2.0, sample_rate=48000, channels=2, freq=440, samples=None) -> path.

    The suffix picks the format: .wav/.flac via soundfile, .opus as Ogg Opus, .mp3 through lameenc.
    """

    def write(
        path: Path,
        seconds: float = 2.0,
        sample_rate: int = 48_000,
        channels: int = 2,
        freq: float = 440.0,
        samples: np.ndarray | None = None,
    ) -> Path:
        data = tone(seconds, sample_rate, channels, freq) if samples is None else samples
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".mp3":
            path.write_bytes(mp3_bytes(data, sample_rate))
        elif suffix == ".opus":
            sf.write(path, data, sample_rate, format="OGG", subtype="OPUS")
        else:
            subtype = "FLOAT" if suffix == ".wav" and data.dtype == np.float32 else None
            sf.write(path, data, sample_rate, subtype=subtype)
        return path

    return write
