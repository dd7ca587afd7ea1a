"""The layers of DiffRhythm's DiT, named as in its released ``state_dict`` (``cfm_model.pt``).

Module names and shapes are the contract here: a strict ``load_state_dict`` of the release must work, so
attribute names follow the release (``time_mlp.0``, ``text_blocks.N.grn.gamma``, ``conv1d.2``, ...).
The math is DiffRhythm's (an F5-TTS-style DiT with LLaMA blocks); what refrain adds is a frame mask
threaded through every layer that mixes frames (convolutions, GRN's norm over time, attention), so a
padded batch item gives the numbers it gives alone. With every frame valid the mask changes nothing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

FREQ_DIM = 256  # sinusoidal features fed to every scalar embedding MLP
TIME_SCALE = 1000.0  # scalars in [0, 1] are multiplied by this before the sinusoids (F5-TTS convention)


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the padded frames of (B, T, D) ``x`` (mask (B, T) bool, True = valid); None = all valid."""
    return x if mask is None else x * mask[..., None].to(x.dtype)


def sinusoids(values: Tensor, dim: int = FREQ_DIM, scale: float = TIME_SCALE) -> Tensor:
    """(B,) scalars -> (B, dim) [sin | cos] features, frequencies 1 .. 1/10000 spaced geometrically."""
    half = dim // 2
    rate = math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=values.device, dtype=torch.float32) * -rate)
    angles = scale * values.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimestepEmbedding(nn.Module):
    """A scalar per song (flow time, crop start, duration) -> a ``dim`` vector through a 2-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = FREQ_DIM) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: Tensor) -> Tensor:
        features = sinusoids(values, self.freq_dim).to(self.time_mlp[0].weight.dtype)
        return self.time_mlp(features)


def position_table(dim: int, length: int, theta: float = 10000.0) -> Tensor:
    """(length, dim) [cos | sin] table added to the lyric token embeddings (absolute positions)."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(length).float(), freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class GRN(nn.Module):
    """ConvNeXt-V2 global response normalisation over the time axis (masked: padding does not count)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        norm = torch.linalg.vector_norm(_masked(x, mask), ord=2, dim=1, keepdim=True)
        scaled = norm / (norm.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * scaled) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Depthwise conv (kernel 7) -> LayerNorm -> pointwise MLP with GELU and GRN, residual."""

    def __init__(self, dim: int, hidden: int, kernel: int = 7) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.dwconv(_masked(x, mask).transpose(1, 2)).transpose(1, 2)
        h = self.act(self.pwconv1(self.norm(h)))
        return x + self.pwconv2(self.grn(h, mask))


class LyricEmbedding(nn.Module):
    """Frame-aligned lyric ids (0 = no token) -> (B, T, text_dim): embedding + position table + ConvNeXt-V2."""

    def __init__(self, vocab: int, dim: int, blocks: int, max_frames: int, mult: int = 2) -> None:
        super().__init__()
        self.text_embed = nn.Embedding(vocab + 1, dim)  # id 0 is the filler / padding token
        self.text_blocks = nn.ModuleList([ConvNeXtV2Block(dim, dim * mult) for _ in range(blocks)])
        self.max_frames = max_frames
        self.register_buffer("positions", position_table(dim, max_frames), persistent=False)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        frames = ids.shape[1]
        index = torch.arange(frames, device=ids.device).clamp(max=self.max_frames - 1)
        h = self.text_embed(ids) + self.positions[index].to(self.text_embed.weight.dtype)
        for block in self.text_blocks:
            h = block(h, mask)
        return h


class ConvPositionEmbedding(nn.Module):
    """Two grouped convolutions (kernel 31, 16 groups) with Mish: the DiT's only positional signal besides RoPE."""

    def __init__(self, dim: int, kernel: int = 31, groups: int = 16) -> None:
        super().__init__()
        conv = lambda: nn.Conv1d(dim, dim, kernel, groups=groups, padding=kernel // 2)  # noqa: E731
        self.conv1d = nn.Sequential(conv(), nn.Mish(), conv(), nn.Mish())

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = _masked(x, mask).transpose(1, 2)
        for index, layer in enumerate(self.conv1d):
            h = layer(h)
            if index == 1 and mask is not None:  # the second conv must see zeros past the end, as alone
                h = h * mask[:, None].to(h.dtype)
        return _masked(h.transpose(1, 2), mask)


class InputEmbedding(nn.Module):
    """Per frame: concat(noisy latent, context latent, lyric embedding, style vector, time vector) -> dim."""

    def __init__(self, latent_dim: int, text_dim: int, dim: int, cond_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(latent_dim * 2 + text_dim + cond_dim * 2, dim)
        self.conv_pos_embed = ConvPositionEmbedding(dim)

    def forward(
        self, x: Tensor, context: Tensor, lyrics: Tensor, style: Tensor, time: Tensor, mask: Tensor | None
    ) -> Tensor:
        frames = x.shape[1]
        per_frame = [
            x,
            context,
            lyrics,
            style[:, None].expand(-1, frames, -1),
            time[:, None].expand(-1, frames, -1),
        ]
        h = self.proj(torch.cat(per_frame, dim=-1))
        return self.conv_pos_embed(h, mask) + h


class FinalAdaLN(nn.Module):
    """LayerNorm without affine, then scale and shift from the conditioning vector (scale first)."""

    def __init__(self, dim: int, cond_dim: int) -> None:
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(cond_dim, dim * 2)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.linear(self.silu(cond)).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


def attention_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, 1, 1, T) additive key mask: 0 for valid frames, the dtype's minimum for padding (never causal)."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias = bias.masked_fill(~mask, torch.finfo(dtype).min)
    return bias[:, None, None, :]


def text_fusion(cond_dim: int, dim: int) -> nn.Sequential:
    """Lyric features added after one of the first half of the blocks; zero-initialised as in the release."""
    layer = nn.Sequential(nn.Linear(cond_dim, dim), nn.SiLU())
    nn.init.zeros_(layer[0].weight)
    nn.init.zeros_(layer[0].bias)
    return layer
