"""Tiny random DiffRhythm backbones and batches (the real class, sizes shrunk) for the tests."""

from __future__ import annotations

from typing import Any

import torch

from refrain.models.backbones.diffrhythm import DiffRhythm

TINY = {
    "dim": 32, "depth": 4, "heads": 4, "dim_head": 8, "ff_mult": 2, "latent_dim": 8, "text_dim": 16,
    "cond_dim": 16, "vocab_size": 20, "conv_layers": 2, "max_frames": 64, "repa_layer": 2,
}  # fmt: skip


def tiny_diffrhythm(seed: int = 0, perturb: float = 0.1, **overrides: Any) -> DiffRhythm:
    """A tiny DiffRhythm; ``perturb`` gives the zero-initialised text-fusion layers a value so lyrics show."""
    torch.manual_seed(seed)
    model = DiffRhythm(**{**TINY, **overrides})
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(perturb * torch.randn(p.shape))
    return model


def diffrhythm_batch(size: int, frames: int, channels: int = 8, style_dim: int = 16, vocab: int = 20,
                     seed: int = 3) -> dict[str, Any]:  # fmt: skip
    """A DiT batch as refrain.data.diffrhythm collates it (latent + DiffRhythm's conditioning keys)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "latent_mean": torch.randn(size, channels, frames, generator=g),
        "latent_std": torch.full((size, channels, frames), 0.1),
        "frame_mask": torch.ones(size, frames, dtype=torch.bool),
        "diffrhythm_style": torch.randn(size, style_dim, generator=g),
        "diffrhythm_lyrics": torch.randint(0, vocab + 1, (size, frames), generator=g),
        "diffrhythm_start": torch.rand(size, generator=g),
    }
