"""Builders for small real audio files (WAV/FLAC/MP3/Opus) that data-prep tests write into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.audio import mp3_bytes, tone

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
