"""8-bit teacher features with stored scales: int8 per channel and per block of frames.

A teacher's (T, D) features are stored as int8 values and a float32 ``teacher_scale.<name>`` tensor of
shape (ceil(T / QUANT_BLOCK), D), both in the same safetensors entry: value = int8 * scale of its
(block, channel). Why per channel: SSL teachers have a few channels far larger than the rest (MERT's
pass 448, the float8 e4m3 limit), and one scale shared across channels would leave the small ones a
handful of levels. Why per block of frames as well: a loud passage then does not coarsen the quiet
rest of the song. The scales cost 4 / QUANT_BLOCK bytes per value (6 % at 64 frames).

The block length is part of the cache fingerprint (``settings_identity``), so an entry is only ever
read with the block it was written with. Reads dequantise to float32, so training sees the same
tensor type for every storage dtype.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

QUANT_BLOCK = 64  # frames per scale row: ~3 s at the latent rates of SAO (21.5/s) and ACE-Step 1.5 (25/s)
SCALE_PREFIX = "teacher_scale."
QMAX = 127  # symmetric: -127..127, so +x and -x round to opposite codes


def quantize_int8(features: Tensor, block: int = QUANT_BLOCK) -> tuple[Tensor, Tensor]:
    """(T, D) float -> (T, D) int8 codes and (ceil(T / block), D) float32 scales.

    The error of every value is at most half its scale (max |x| of its block and channel / 254).
    NaN/inf stay visible: they make the scale non-finite, which the finite checks of training and
    ``--verify`` catch as for float entries.
    """
    x = features.detach().float()
    frames, dim = x.shape
    blocks = max(1, math.ceil(frames / block))
    padded = F.pad(x, (0, 0, 0, blocks * block - frames))  # zeros do not change a block's max
    scale = padded.abs().reshape(blocks, block, dim).amax(dim=1) / QMAX
    per_frame = scale.repeat_interleave(block, dim=0)[:frames]
    safe = torch.where(per_frame > 0, per_frame, torch.ones_like(per_frame))  # an all-zero block: codes 0
    codes = torch.round(x / safe).clamp_(-QMAX, QMAX).to(torch.int8)
    return codes.contiguous(), scale.contiguous()


def dequantize_rows(codes: Tensor, scale: Tensor, start: int, block: int = QUANT_BLOCK) -> Tensor:
    """Float32 values of ``codes`` = rows start.. of a quantised tensor, given the scale rows from
    block start // block on (``scale_rows`` says which)."""
    rows = torch.arange(start, start + codes.shape[0]) // block - start // block
    return codes.float() * scale.float()[rows]


def scale_rows(start: int, count: int, block: int = QUANT_BLOCK) -> slice:
    """The scale rows that rows start..start + count of the codes need."""
    if count <= 0:
        return slice(0, 0)
    return slice(start // block, (start + count - 1) // block + 1)


class _Entry(Protocol):
    def names(self) -> list[str]: ...
    def _shape(self, name: str) -> tuple[int, ...]: ...
    def _slice(self, name: str, index: tuple[slice, ...]) -> Tensor: ...


def read_teacher(entry: _Entry, name: str, start: int, stop: int) -> Tensor:
    """(stop - start, D) float32 rows of a stored teacher tensor, dequantised when it is int8.

    A memory-mapped file entry reads only the crop's codes and their few scale rows.
    """
    codes = entry._slice("teacher." + name, (slice(start, stop),))
    if codes.dtype != torch.int8:
        return codes.float()
    if SCALE_PREFIX + name not in entry.names():
        raise ValueError(f"int8 teacher {name} has no {SCALE_PREFIX}{name} scales")
    first = min(max(start, 0), entry._shape("teacher." + name)[0])
    scale = entry._slice(SCALE_PREFIX + name, (scale_rows(first, codes.shape[0]),))
    return dequantize_rows(codes, scale, first)


def check_scales(entry: _Entry) -> str:
    """'' when every stored scale tensor fits its teacher's shape, else what is wrong (for the error)."""
    names = set(entry.names())
    for scale_name in sorted(n for n in names if n.startswith(SCALE_PREFIX)):
        teacher = "teacher." + scale_name[len(SCALE_PREFIX) :]
        if teacher not in names:
            return f"{scale_name} has no {teacher}"
        frames, dim = entry._shape(teacher)
        expected = (max(1, math.ceil(frames / QUANT_BLOCK)), dim)
        if entry._shape(scale_name) != expected:
            return f"{scale_name} is {entry._shape(scale_name)}, expected {expected}"
    return ""
