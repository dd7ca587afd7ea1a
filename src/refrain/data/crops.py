"""Training crops of an encoded song: the latent window, the lyrics inside it and the teacher frames under it.

A crop is chosen in latent frames; everything else follows from its start and length in seconds, so
the lyric grid (DiffRhythm's sentence alignment, shifted by the crop start, earlier sentences dropped)
and each teacher's feature window (at the teacher's own frame rate) describe the same stretch of audio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from refrain.errors import RefrainInputError
from refrain.text.alignment import align_sentences

_EPS = 1e-6


@dataclass(frozen=True)
class Crop:
    """``frames`` latent frames starting at latent frame ``start``, at ``frame_rate`` frames per second."""

    start: int
    frames: int
    frame_rate: float

    @property
    def start_seconds(self) -> float:
        return self.start / self.frame_rate

    @property
    def end_seconds(self) -> float:
        return (self.start + self.frames) / self.frame_rate


def choose_crop(
    total_frames: int, max_frames: int, frame_rate: float, rng: np.random.Generator | None = None
) -> Crop:
    """At most ``max_frames`` frames: a uniform random start with ``rng`` (training), else from 0."""
    if max_frames <= 0:
        raise RefrainInputError(
            "data.max_frames", f"must be positive, got {max_frames}", "set a crop length in latent frames"
        )
    if total_frames <= 0:
        raise RefrainInputError(
            "cache entry", "the song encoded to zero latent frames", "check the audio file"
        )
    frames = min(int(total_frames), int(max_frames))
    start = int(rng.integers(0, total_frames - frames + 1)) if rng is not None else 0
    return Crop(start, frames, float(frame_rate))


def teacher_span(crop: Crop, teacher_frames: int, audio_seconds: float) -> tuple[int, int]:
    """[first, stop) teacher frames under the crop.

    The rate is the teacher's frames over the song's seconds as encoded (chunked teachers lose a frame
    per chunk to their receptive field, so the nominal 75 or 50 frames/s would drift over a song).
    """
    if teacher_frames <= 0 or audio_seconds <= 0:
        return 0, 0
    rate = teacher_frames / audio_seconds
    first = min(teacher_frames, math.floor(crop.start_seconds * rate + _EPS))
    stop = min(teacher_frames, max(first, round(crop.end_seconds * rate)))
    return first, stop


def record_sentences(record: Mapping[str, Any]) -> list[tuple[float, list[int], str]]:
    """(time, phoneme ids, text) per timed lyric line of a record; lines without ids are skipped."""
    lines = list(record.get("lrc") or [])
    ids = list(record.get("phoneme_ids") or [])
    if len(lines) != len(ids):
        raise RefrainInputError(
            str(record.get("keys") or "record"),
            f"{len(lines)} lyric lines but {len(ids)} phoneme id lists",
            "prepare the dataset again (refrain-prepare)",
        )
    return [
        (float(line["time"]), [int(i) for i in tokens], str(line["text"]))
        for line, tokens in zip(lines, ids, strict=True)
        if tokens
    ]


def crop_lyrics(sentences: Sequence[tuple[float, list[int], str]], crop: Crop) -> tuple[torch.Tensor, str]:
    """(crop.frames,) frame-aligned phoneme ids for the crop, and the text of the lines inside it.

    ``align_sentences`` with ``crop_start`` does the shifting and dropping; the text lists the lines
    that start inside [crop start, crop end), the ones whose tokens the grid can hold.
    """
    grid = align_sentences(
        [(time, ids) for time, ids, _ in sentences], crop.frames, crop.frame_rate, crop.start_seconds
    )
    inside = [
        text
        for time, _, text in sorted(sentences, key=lambda s: s[0])
        if crop.start_seconds <= time < crop.end_seconds
    ]
    return grid, "\n".join(inside)
