"""Validate one audio file by decoding it once, whole, at its native rate.

Bad audio is never fatal: each problem becomes a named Issue (skip, repair or note) and the facts the
record needs (duration, rate, channels) come from the same single decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refrain.audio.io import audio_info, load_audio
from refrain.data.issues import Issue, make_issue
from refrain.data.mp3_check import scan_mp3
from refrain.errors import RefrainInputError

TARGET_SAMPLE_RATE = 48_000
SILENCE_FRACTION = 0.95  # ACE-Step rejects clips with more than 95 % exact zeros
TRUNCATION_TOLERANCE = 0.01  # decoded length may fall short of the header by 1 % (encoder padding)


@dataclass(frozen=True)
class AudioFacts:
    """What the record keeps about the audio, measured from the decoded samples."""

    duration: float
    sample_rate: int
    channels: int
    frames: int


def _skip(code: str, detail: str) -> tuple[None, list[Issue]]:
    return None, [make_issue(code, detail)]


def inspect_audio(path: Path, min_seconds: float) -> tuple[AudioFacts | None, list[Issue]]:
    """Facts of a usable file plus its repair/note issues, or (None, [the skip reason])."""
    try:
        size = path.stat().st_size
    except OSError as err:
        return _skip("unreadable", str(err))
    if size == 0:
        return _skip("empty_file", "0 bytes")
    try:
        header = audio_info(path)
    except RefrainInputError as err:
        return _skip("undecodable", err.problem)
    if header.duration < min_seconds:
        return _skip("too_short", f"{header.duration:.3f} s < {min_seconds:g} s")
    try:
        loaded = load_audio(path, sample_rate=None)
    except RefrainInputError as err:
        return _skip("undecodable", err.problem)
    issues: list[Issue] = []
    # Native rate, so the decoded length is the real one (original_frames is the header's claim).
    rate, channels, frames = loaded.original_sample_rate, loaded.original_channels, loaded.samples.shape[1]
    if frames == 0:
        return _skip("undecodable", "no samples could be decoded")
    if loaded.nonfinite_repaired:
        total = frames * channels
        if loaded.nonfinite_repaired >= total:
            return _skip("all_nonfinite", f"{total} samples")
        issues.append(make_issue("nonfinite_repaired", f"{loaded.nonfinite_repaired} of {total} samples"))
    if header.format.upper() == "MP3":
        scan = scan_mp3(path)  # mpg123 decodes cut-off MP3s silently; the frame headers tell
        if scan.truncated:
            return _skip("truncated", f"{scan.detail}; {frames / rate:.2f} s decoded")
    elif header.frames > 0 and frames < header.frames * (1.0 - TRUNCATION_TOLERANCE):
        return _skip("truncated", f"decoded {frames / rate:.2f} s of the {header.frames / rate:.2f} s announced")
    duration = frames / rate
    if duration < min_seconds:
        return _skip("too_short", f"{duration:.3f} s decodable < {min_seconds:g} s")
    zeros = float(np.count_nonzero(loaded.samples == 0.0)) / max(loaded.samples.size, 1)
    if zeros > SILENCE_FRACTION:
        return _skip("silent", f"{100 * zeros:.1f}% exact zeros")
    if rate != TARGET_SAMPLE_RATE:
        issues.append(make_issue("resampled_at_load", f"{rate} Hz -> {TARGET_SAMPLE_RATE} Hz"))
    if channels == 1:
        issues.append(make_issue("upmixed_at_load", "1 channel"))
    elif channels > 2:
        issues.append(make_issue("downmixed_at_load", f"{channels} channels"))
    return AudioFacts(duration=duration, sample_rate=rate, channels=channels, frames=frames), issues
