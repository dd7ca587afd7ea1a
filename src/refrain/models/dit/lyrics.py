"""Frame-aligned lyric embedding (DiffRhythm's sentence-level alignment).

Phoneme ids already sit at the latent frame rate, so the embedding is added to the DiT input frame by
frame rather than read through cross-attention: DiffRhythm reports that cross-attention to unaligned
text failed to give intelligible vocals. A token embedding plus a sinusoidal position table is refined
by a few ConvNeXt-style depthwise 1-D blocks, which let a phoneme see its neighbours (co-articulation)
at the frame rate. Padded frames are zeroed before every convolution so they never leak into valid ones.

The depthwise convolution reads the (B, T, D) tokens in place as a channels-last 2-D image (B, D, 1, T):
run as ``Conv1d`` on a (B, D, T) transpose it copied its input and output to contiguous memory in the
forward and again in the backward pass, and its backward took ~3x the time (measured in bench/bench_dit.py).
Same weights and math; outputs agree with ``Conv1d`` to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from refrain.errors import RefrainInputError


def sinusoidal_positions(num_positions: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(T, dim) sin/cos table over frame indices, computed for any length (no maximum to outgrow)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / half)
    angles = torch.arange(num_positions, device=device, dtype=torch.float32)[:, None] * freqs[None]
    table = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if dim % 2:
        table = torch.nn.functional.pad(table, (0, 1))
    return table.to(dtype)


def depthwise_conv_tokens(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """``conv`` (a depthwise ``Conv1d``) over (B, T, D) tokens, returning (B, T, D) without a transpose copy:
    the token layout is channels-last for a (B, D, 1, T) image, which the 2-D kernels take as it is."""
    out = F.conv2d(
        x.transpose(1, 2).unsqueeze(2),
        conv.weight.unsqueeze(2),
        conv.bias,
        stride=(1, conv.stride[0]),
        padding=(0, conv.padding[0]),  # type: ignore[index]
        dilation=(1, conv.dilation[0]),
        groups=conv.groups,
    )
    return out.squeeze(2).transpose(1, 2)


class ConvNeXtBlock1d(nn.Module):
    """Depthwise conv -> LayerNorm -> pointwise MLP (GELU) -> residual, over (B, T, D)."""

    def __init__(self, dim: int, kernel_size: int = 7, mult: int = 2) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, dim * mult)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(dim * mult, dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``mask`` (B, T, 1) of 0/1, or None when every frame is valid (multiplying by ones is a no-op)."""
        x = x if mask is None else x * mask
        h = depthwise_conv_tokens(self.dwconv, x)
        h = self.pw2(self.act(self.pw1(self.norm(h))))
        return x + h if mask is None else (x + h) * mask


class LyricEmbedder(nn.Module):
    """(B, T) phoneme ids (0 = none) -> (B, T, dim) frame features."""

    def __init__(self, vocab_size: int, dim: int, num_layers: int = 4, kernel_size: int = 7) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.token = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.blocks = nn.ModuleList(ConvNeXtBlock1d(dim, kernel_size) for _ in range(num_layers))

    def check_ids(self, ids: Tensor) -> None:
        """One-line error for ids outside the table. Reads the ids on the host: call it where that is free
        (CPU tensors) or once per run (``DiffusionTransformer.prepare``), not at every GPU step."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise RefrainInputError(
                "model.dit.config.lyric_vocab_size",
                f"phoneme id range [{int(ids.min())}, {int(ids.max())}] exceeds the embedding size {self.vocab_size}",
                "set lyric_vocab_size to at least len(phoneme_vocab.json) (ids only grow, so leave headroom)",
            )

    def forward(self, ids: Tensor, frame_mask: Tensor, all_valid: bool = False) -> Tensor:
        """``all_valid``: every frame_mask entry is known True, so the padding multiplies are skipped."""
        if ids.device.type == "cpu":
            self.check_ids(ids)
        elif ids.numel():  # on an accelerator: checked on the device, no host synchronisation
            torch._assert_async(
                ((ids >= 0) & (ids < self.vocab_size)).all(), "phoneme id >= lyric_vocab_size"
            )
        x = self.token(ids)
        x = x + sinusoidal_positions(ids.shape[1], x.shape[-1], x.device, x.dtype)[None]
        mask = None if all_valid else frame_mask.unsqueeze(-1).to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x if mask is None else x * mask
