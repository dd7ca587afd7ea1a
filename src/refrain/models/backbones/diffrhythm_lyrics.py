"""DiffRhythm's sentence-level lyric placement: token lists at line start times -> one id per latent frame.

DiffRhythm's ids come from its own G2P (363 phoneme/punctuation ids; the released tokenizer adds 1 so
that 0 is free for padding). The rules, as its dataset and inference code apply them:

- a line starts at frame ``int(seconds * 44100 / 2048)``, or right after the previous line when it
  would start inside it; its tokens fill consecutive frames and are cut at the window's end;
- a period inside a line becomes a comma, and every line ends with a period;
- for a crop starting at ``start_seconds``, line times shift by it and earlier lines are dropped, and
  lines starting after the window are dropped;
- at 2048 frames the last remaining line is dropped (the release's base model was trained so).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PAD_ID, COMMA_ID, PERIOD_ID, START_ID = 0, 1, 2, 355
VOCAB_SIZE = 363
SAMPLE_RATE, HOP = 44100, 2048
BASE_FRAMES = 2048


def frame_of(seconds: float) -> int:
    """The latent frame a time falls in (DiffRhythm truncates, it does not round)."""
    return int(seconds * SAMPLE_RATE / HOP)


def lines_in_window(
    times: Sequence[float], lines: Sequence[Sequence[int]], start_seconds: float, max_frames: int
) -> list[tuple[float, list[int]]]:
    """(time relative to the crop, tokens) of the lines the window keeps (see the module docstring)."""
    window = max_frames * HOP / SAMPLE_RATE
    kept = [
        (float(t) - start_seconds, list(map(int, tokens))) for t, tokens in zip(times, lines, strict=True)
    ]
    kept = [(t, tokens) for t, tokens in kept if 0 <= t < window]
    if max_frames == BASE_FRAMES and kept:
        kept = kept[:-1]
    return kept


def place_lyrics(lines: Sequence[tuple[float, Sequence[int]]], max_frames: int) -> Tensor:
    """(max_frames,) long ids: each line's tokens from its start frame, periods only at line ends."""
    ids = torch.full((max_frames,), PAD_ID, dtype=torch.long)
    end = 0
    for seconds, tokens in lines:
        line = [COMMA_ID if token == PERIOD_ID else int(token) for token in tokens] + [PERIOD_ID]
        start = max(frame_of(seconds), end)
        length = max(0, min(len(line), max_frames - start))
        if length:
            ids[start : start + length] = torch.tensor(line[:length], dtype=torch.long)
        end = start + length
    return ids
