"""A very small real Oobleck (hop 64) for fast unit tests; conftests import these fixtures."""

from __future__ import annotations

import pytest
import torch

from refrain.models.vae.oobleck import OobleckVAE, build_oobleck_vae

TINY = {
    "sample_rate": 44100,
    "downsampling_ratios": [2, 4, 8],
    "channel_multiples": [1, 2, 4],
    "encoder_hidden_size": 8,
    "decoder_channels": 8,
    "latent_channels": 4,
}


@pytest.fixture
def tiny_config() -> dict:
    return dict(TINY)


@pytest.fixture
def tiny_vae() -> OobleckVAE:
    torch.manual_seed(0)
    return build_oobleck_vae(**TINY).eval()


@pytest.fixture
def music() -> torch.Tensor:
    """One second of a stereo chord with a little noise, (1, 2, 44096): a multiple of hop 64."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(44096) / 44100
    left = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.2 * torch.sin(2 * torch.pi * 3300 * t)
    right = 0.3 * torch.sin(2 * torch.pi * 330 * t) + 0.05 * torch.randn(t.shape, generator=generator)
    return torch.stack([left, right]).unsqueeze(0)
