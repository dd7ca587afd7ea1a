"""Sentence-level lyric alignment (DiffRhythm): phoneme ids placed on the latent frame grid.

Each sentence's tokens start at the frame of its timestamp and occupy consecutive frames; the
model learns the rest. This is what makes lyrics intelligible without cross-attention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Guards floor() against float error such as 0.29 * 100 = 28.999999999999996.
_EPS = 1e-6


def sentence_start_frame(start: float, frame_rate: float, crop_start: float = 0.0) -> int:
    """floor((start - crop_start) * frame_rate): the frame a sentence begins at, before any push."""
    return math.floor((start - crop_start) * frame_rate + _EPS)


def align_sentences(
    sentences: Sequence[tuple[float, Sequence[int]]],
    num_frames: int,
    frame_rate: float,
    crop_start: float = 0.0,
) -> torch.LongTensor:
    """A (num_frames,) LongTensor of phoneme ids at their sentence frames, 0 (padding) elsewhere.

    Rules, DiffRhythm's:
    - times are seconds in the full song; `crop_start` is where the training crop begins, so a
      sentence at `start` lands at frame floor((start - crop_start) * frame_rate);
    - a sentence that began before `crop_start` is dropped whole (its tail is not kept: the model
      never sees half a sentence without its start);
    - sentences are taken in time order; one that would start inside the previous sentence's tokens
      starts right after them (pushed right), so no token is overwritten;
    - tokens that fall at or past `num_frames` are cut; the rest of the grid stays 0.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    grid = [0] * num_frames
    cursor = 0
    for start, ids in sorted(sentences, key=lambda item: item[0]):
        if start < crop_start or not ids:
            continue
        if any(int(i) <= 0 for i in ids):
            raise ValueError(f"token ids must be > 0 (0 is padding), got {list(ids)} at {start:.2f}s")
        frame = max(sentence_start_frame(start, frame_rate, crop_start), cursor)
        if frame >= num_frames:
            break
        kept = [int(i) for i in ids[: num_frames - frame]]
        grid[frame : frame + len(kept)] = kept
        cursor = frame + len(ids)
    return torch.tensor(grid, dtype=torch.long)
