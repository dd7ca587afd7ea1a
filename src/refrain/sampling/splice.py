"""Put regenerated audio back into the song it came from, at the waveform level.

The latent editing modes keep the untouched *latent* frames exact, but a VAE round trip is not the
identity, so the decoded song is spliced into the original waveform: outside the regenerated span the
output is the source's samples bit for bit, with a short raised-cosine crossfade at each seam (inside
the regenerated span for repaint, inside the kept song for extend).
"""

from __future__ import annotations

import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.edits import apply_crossfade, crossfade_weights


def seconds_to_samples(seconds: float, sample_rate: int) -> int:
    return round(seconds * sample_rate)


def splice_repaint(
    original: Tensor, generated: Tensor, start: float, end: float, sample_rate: int, crossfade: float
) -> Tensor:
    """(C, N) song whose [start, end) seconds come from ``generated`` (C, >= N), the rest from ``original``."""
    total = original.shape[-1]
    if generated.shape[-1] < total:
        raise RefrainInputError(
            "repaint",
            f"decoded {generated.shape[-1]} samples for a {total}-sample song",
            "report this as a bug",
        )
    first = min(total, seconds_to_samples(start, sample_rate))
    last = min(total, seconds_to_samples(end, sample_rate))
    weights = crossfade_weights(total, first, last, seconds_to_samples(crossfade, sample_rate))
    return apply_crossfade(original, generated[..., :total].to(original.dtype), weights)


def splice_extend(
    original: Tensor, generated: Tensor, left_samples: int, sample_rate: int, crossfade: float
) -> Tensor:
    """(C, M) extended song: ``original`` (C, N) kept at [left, left + N), ``generated`` around it."""
    total, length = generated.shape[-1], original.shape[-1]
    if left_samples < 0 or left_samples + length > total:
        raise RefrainInputError(
            "extend",
            f"a {length}-sample song does not fit at {left_samples} in {total} samples",
            "report this as a bug",
        )
    placed = torch.nn.functional.pad(original, (left_samples, total - left_samples - length))
    keep = crossfade_weights(
        total, left_samples, left_samples + length, seconds_to_samples(crossfade, sample_rate)
    )
    return apply_crossfade(placed, generated.to(original.dtype), 1.0 - keep)
