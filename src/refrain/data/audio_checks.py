"""Validate one audio file by decoding it once, block by block, at its native rate.

Bad audio is never fatal: each problem becomes a named Issue (skip, repair or note) and the facts the
record needs (duration, rate, channels) come from the same single pass. The pass holds one decoded
block at a time (`refrain.audio.io.read_blocks`), so a two-hour WAV costs a few MB, not gigabytes, and
a file longer than `max_seconds` is skipped from its header before any decoding.

Samples beyond full scale (float files only): a few overs, peak at most +6 dBFS, are what a float
export of a loud master holds; they are clipped at load like a PCM export would be, with a note. A
file where more than 0.1 % of the samples lie beyond full scale, or any beyond +6 dBFS, is a level
mistake (a mix left at the wrong gain: peak 68 with most samples over); clipping it would train on
distortion and silently normalising it would need a gain every loader applies, so it is skipped as
`out_of_range` with its peak, and the fix is to peak-normalise and re-run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refrain.audio.io import AudioInfo, audio_info, read_blocks
from refrain.data.issues import Issue, make_issue
from refrain.data.mp3_check import scan_mp3
from refrain.errors import RefrainInputError

TARGET_SAMPLE_RATE = 48_000
SILENCE_FRACTION = 0.95  # ACE-Step rejects clips with more than 95 % exact zeros
TRUNCATION_TOLERANCE = 0.01  # decoded length may fall short of the header by 1 % (encoder padding)
DEFAULT_MAX_SECONDS = 1200.0  # 20 minutes: longer than nearly any song, and a bound on whole-song loads
CLIP_FRACTION = 1e-3  # at most this share of samples beyond full scale is clipped with a note ...
CLIP_PEAK = 2.0  # ... and only when the peak stays within +6 dBFS; anything more is out_of_range


@dataclass(frozen=True)
class AudioFacts:
    """What the record keeps about the audio, measured from the decoded samples."""

    duration: float
    sample_rate: int
    channels: int
    frames: int


@dataclass
class SampleStats:
    """Counts over every decoded sample value (all channels), from one streamed pass."""

    frames: int = 0
    values: int = 0
    nonfinite: int = 0
    zeros: int = 0  # exact zeros, counting repaired NaN/inf as zeros
    overs: int = 0  # finite values with |x| > 1
    peak: float = 0.0  # largest finite |x|

    def add(self, block: np.ndarray) -> None:
        finite = np.isfinite(block)
        clean = np.where(finite, block, np.float32(0.0))
        magnitude = np.abs(clean)
        self.frames += block.shape[0]
        self.values += block.size
        self.nonfinite += int(block.size - np.count_nonzero(finite))
        self.zeros += int(block.size - np.count_nonzero(clean))
        self.overs += int(np.count_nonzero(magnitude > 1.0))
        self.peak = max(self.peak, float(magnitude.max(initial=0.0)))


def measure(header: AudioInfo) -> SampleStats:
    """Stream the whole file once and count what the checks need (raises RefrainInputError)."""
    stats = SampleStats()
    for _, block in read_blocks(header):
        stats.add(block)
    return stats


def _skip(code: str, detail: str) -> tuple[None, list[Issue]]:
    return None, [make_issue(code, detail)]


def _level_issue(stats: SampleStats) -> Issue | None:
    """None for audio within full scale; a clipped_at_load note or an out_of_range skip otherwise."""
    if stats.overs == 0:
        return None
    share = stats.overs / max(stats.values, 1)
    detail = (
        f"peak {stats.peak:.3g} ({20 * math.log10(stats.peak):+.1f} dBFS), "
        f"{stats.overs} of {stats.values} samples ({100 * share:.2g}%) beyond full scale"
    )
    if share <= CLIP_FRACTION and stats.peak <= CLIP_PEAK:
        return make_issue("clipped_at_load", detail)
    return make_issue("out_of_range", detail)


def inspect_audio(
    path: Path, min_seconds: float, max_seconds: float | None = DEFAULT_MAX_SECONDS
) -> tuple[AudioFacts | None, list[Issue]]:
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
    if max_seconds is not None and header.duration > max_seconds:
        return _skip(
            "too_long", f"{header.duration:.1f} s > {max_seconds:g} s; raise --max_duration to keep it"
        )
    try:
        stats = measure(header)
    except RefrainInputError as err:
        scan = scan_mp3(path) if header.format.upper() == "MP3" else None
        if scan is not None and scan.corrupt:  # the decoder gave up inside the damaged stretch
            return _skip("corrupt_stretch", scan.detail)
        return _skip("undecodable", err.problem)
    rate, channels, frames = header.sample_rate, header.channels, stats.frames
    if frames == 0:
        return _skip("undecodable", "no samples could be decoded")
    if header.format.upper() == "MP3":
        scan = scan_mp3(path)  # mpg123 decodes cut-off and damaged MP3s silently; the frame headers tell
        if scan.corrupt or scan.truncated:
            code = "corrupt_stretch" if scan.corrupt else "truncated"
            return _skip(code, f"{scan.detail}; {frames / rate:.2f} s decoded")
    elif frames < header.frames * (1.0 - TRUNCATION_TOLERANCE):
        return _skip(
            "truncated", f"decoded {frames / rate:.2f} s of the {header.frames / rate:.2f} s announced"
        )
    issues: list[Issue] = []
    if stats.nonfinite:
        if stats.nonfinite >= stats.values:
            return _skip("all_nonfinite", f"{stats.values} samples")
        issues.append(make_issue("nonfinite_repaired", f"{stats.nonfinite} of {stats.values} samples"))
    duration = frames / rate
    if duration < min_seconds:
        return _skip("too_short", f"{duration:.3f} s decodable < {min_seconds:g} s")
    if stats.zeros / max(stats.values, 1) > SILENCE_FRACTION:
        return _skip("silent", f"{100 * stats.zeros / stats.values:.1f}% exact zeros")
    level = _level_issue(stats)
    if level is not None and level.severity == "skip":
        return None, [level]
    issues.extend([level] if level is not None else [])
    if rate != TARGET_SAMPLE_RATE:
        issues.append(make_issue("resampled_at_load", f"{rate} Hz -> {TARGET_SAMPLE_RATE} Hz"))
    if channels == 1:
        issues.append(make_issue("upmixed_at_load", "1 channel"))
    elif channels > 2:
        issues.append(make_issue("downmixed_at_load", f"{channels} channels"))
    return AudioFacts(duration=duration, sample_rate=rate, channels=channels, frames=frames), issues
