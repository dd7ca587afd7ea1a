"""Overlap-and-crossfade over the time axis, so a whole song is encoded/decoded in bounded memory."""

from __future__ import annotations

from collections.abc import Callable

import torch


def chunk_starts(total: int, chunk: int, overlap: int) -> list[int]:
    """Start frames of full-length chunks covering ``[0, total)``; the last one is aligned to the end."""
    if total <= chunk:
        return [0]
    step = chunk - overlap
    starts = list(range(0, total - chunk, step))
    starts.append(total - chunk)
    return starts


def _ramp_weights(length: int, fade: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """Per-sample weights of one chunk: ones, with a crossfade where the chunk overlaps a neighbour.

    Of the ``fade`` overlapping samples at a shared end, the outer quarter gets weight zero (those
    outputs saw the chunk's zero padding), the middle half ramps linearly and the rest is one; a regular
    neighbour's mirrored weights sum with these to exactly one.
    """
    weights = torch.ones(length)
    if fade <= 0:
        return weights
    margin = fade // 4
    ramp_len = fade - 2 * margin
    ramp = torch.cat(
        [
            torch.zeros(margin),
            (torch.arange(ramp_len, dtype=torch.float32) + 0.5) / ramp_len,
            torch.ones(margin),
        ]
    )
    if fade_in:
        weights[:fade] = ramp
    if fade_out:
        weights[-fade:] = ramp.flip(0)
    return weights


def crossfade_chunks(
    process: Callable[[int, int], torch.Tensor],
    total: int,
    chunk: int,
    overlap: int,
    scale: int,
    out_device: torch.device | str,
) -> torch.Tensor:
    """Run ``process(start, stop)`` over overlapping input frame ranges and crossfade the outputs.

    ``process`` maps input frames [start, stop) to an output whose last axis is ``(stop - start) * scale``
    long (scale = hop when decoding latents to audio, 1 when encoding to latents at frame resolution).
    Only one chunk's output is alive on the model device at a time; the sum lives on ``out_device``.
    """
    starts = chunk_starts(total, chunk, overlap)
    if len(starts) == 1:
        return process(0, total).to(out_device)
    output: torch.Tensor | None = None
    weight_sum = torch.zeros(total * scale, device=out_device)
    for index, start in enumerate(starts):
        stop = start + chunk
        piece = process(start, stop).to(out_device)
        if output is None:
            output = torch.zeros(*piece.shape[:-1], total * scale, dtype=piece.dtype, device=out_device)
        weights = _ramp_weights(chunk * scale, overlap * scale, index > 0, index < len(starts) - 1).to(
            out_device
        )
        output[..., start * scale : stop * scale] += piece * weights.to(piece.dtype)
        weight_sum[start * scale : stop * scale] += weights
    assert output is not None
    return output / weight_sum.clamp_min(1e-6).to(output.dtype)
