"""Tiny random DiffRhythm backbones and batches (the real class, sizes shrunk) for the tests."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from refrain.models.backbones.diffrhythm import DiffRhythm

TINY = {
    "dim": 32,
    "depth": 4,
    "heads": 4,
    "dim_head": 8,
    "ff_mult": 2,
    "latent_dim": 8,
    "text_dim": 16,
    "vocab_size": 20,
    "conv_layers": 2,
    "max_frames": 64,
    "repa_layer": 2,
}


def tiny_diffrhythm(seed: int = 0, perturb: float = 0.1, **overrides: Any) -> DiffRhythm:
    """A tiny DiffRhythm; ``perturb`` gives the zero-initialised text-fusion layers a value so lyrics show."""
    torch.manual_seed(seed)
    model = DiffRhythm(**{**TINY, **overrides})
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(perturb * torch.randn(p.shape))
    return model


def diffrhythm_batch(
    size: int, frames: int, channels: int = 8, style_dim: int = 16, vocab: int = 20, seed: int = 3
) -> dict[str, Any]:
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


def write_dataset(root: Path) -> Path:
    """DiffRhythm's dataset layout (torch.save'd .pt files, train.scp) with 3 good songs and 4 bad lines."""
    g = torch.Generator().manual_seed(0)
    for sub in ("lrc", "latent", "style"):
        (root / sub).mkdir(parents=True)
    lines = []
    for i, frames in enumerate((120, 90, 150)):
        torch.save(torch.randn(1, 64, frames, generator=g), root / "latent" / f"s{i}.pt")
        torch.save(torch.randn(1, 512, generator=g), root / "style" / f"s{i}.pt")
        lrc = {"time": [0.5, 1.5, 3.0, 4.0], "lrc": [[10, 11, 2], [12], [13, 14], [15]]}
        torch.save(lrc, root / "lrc" / f"s{i}.pt")
        lines.append(
            f"s{i}|lrc/s{i}.pt|{root / 'latent' / f's{i}.pt'}|style/s{i}.pt"
        )  # absolute and relative
    torch.save(torch.randn(1, 32, 50), root / "latent" / "bad.pt")
    torch.save({"time": [0.1], "lrc": [[1]], "x": argparse.Namespace()}, root / "lrc" / "evil.pt")
    lines += [
        "bad|lrc/s0.pt|latent/bad.pt|style/s0.pt",  # 32 channels
        "gone|lrc/s0.pt|latent/missing.pt|style/s0.pt",
        "evil|lrc/evil.pt|latent/s0.pt|style/s0.pt",  # needs code to unpickle
        "short|lrc/s0.pt|latent/s0.pt",
    ]
    (root / "train.scp").write_text("\n".join(lines) + "\n")
    return root / "train.scp"
