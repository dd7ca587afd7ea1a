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
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function

from refrain.errors import RefrainInputError
from refrain.models.dit.fused import autocast_active


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
    the token layout is channels-last for a (B, D, 1, T) image, which the 2-D kernels take as it is.

    A "same" convolution (stride and dilation 1, odd kernel, padding k // 2) in float32/float64 outside
    autocast runs through ``_DepthwiseSame``, whose backward is cheaper than the stock one."""
    k = conv.kernel_size[0]
    if (
        conv.stride[0] == 1
        and conv.dilation[0] == 1
        and k % 2 == 1
        and conv.padding == (k // 2,)
        and conv.groups == x.shape[-1] == conv.weight.shape[0]
        and x.dtype in (torch.float32, torch.float64)
        and conv.weight.dtype == x.dtype
        and not autocast_active(x.device)
        and torch.is_grad_enabled()  # without a backward to shorten, the plain call (sampling's prepare)
    ):
        return _DepthwiseSame.apply(x, conv.weight, conv.bias)  # type: ignore[no-any-return]
    return _conv_tokens(x, conv.weight, conv.bias, conv.stride[0], conv.padding[0], conv.dilation[0])  # type: ignore[index]


def _conv_tokens(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int, dilation: int
) -> Tensor:
    """The depthwise (D, 1, k) ``weight`` over (B, T, D) tokens read as a channels-last (B, D, 1, T) image."""
    out = F.conv2d(
        x.transpose(1, 2).unsqueeze(2),
        weight.unsqueeze(2),
        bias,
        stride=(1, stride),
        padding=(0, padding),
        dilation=(1, dilation),
        groups=weight.shape[0],
    )
    return out.squeeze(2).transpose(1, 2)


class _DepthwiseSame(Function):
    """A depthwise "same" convolution over (B, T, D) tokens with a hand-written backward.

    Why: the stock convolution backward of this depthwise conv took ~5.5 ms at 1,024 frames x 512 channels
    on one CPU thread (forward ~1 ms), 1 % of the realistic bench_dit step for four lyric blocks. Here the
    input gradient is the forward kernel run on the gradient with the flipped taps (same padding), and the
    weight gradient takes one multiply and token sum per tap (k of them, over (B, T, D) slices); the bias
    gradient is the gradient's token sum. Same forward; gradients equal to float rounding (tested).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _conv_tokens(x, weight, bias, 1, weight.shape[-1] // 2, 1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        k, frames = weight.shape[-1], x.shape[1]
        pad = k // 2
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv_tokens(grad, weight.flip(-1), None, 1, pad, 1)
        if ctx.needs_input_grad[1]:
            taps = []
            for tap in range(k):  # out[t] += w[tap] x[t + tap - pad]: sum over t of grad[t] x[t + shift]
                shift, n = tap - pad, frames - abs(tap - pad)
                if n <= 0:  # a tap that only ever reads padding
                    taps.append(weight.new_zeros(weight.shape[0]))
                    continue
                xs = x[:, shift : shift + n] if shift >= 0 else x[:, :n]
                gs = grad[:, :n] if shift >= 0 else grad[:, -shift:]
                taps.append((xs * gs).sum((0, 1)))
            grad_w = torch.stack(taps, dim=-1).unsqueeze(1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 1))
        return grad_x, grad_w, grad_b


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
