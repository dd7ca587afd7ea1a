"""initial_posterior_std: a new Oobleck whose sampled latents are not buried in noise (the demo VAE, issue 19)."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from refrain.config import conf_dir
from refrain.errors import RefrainInputError
from refrain.models.vae.oobleck import build_oobleck_vae


def test_default_init_buries_the_latent_mean_in_noise_and_the_option_does_not(tiny_config, music) -> None:
    torch.manual_seed(0)
    plain = build_oobleck_vae(**tiny_config).eval()
    torch.manual_seed(0)
    quiet = build_oobleck_vae(**tiny_config, initial_posterior_std=0.01).eval()
    with torch.no_grad():
        before, after = plain.encode(music), quiet.encode(music)
    assert before.std.mean() > 0.5  # softplus(~0) = 0.69: the noise a sample adds at Oobleck's init
    assert after.std.mean() == pytest.approx(0.01, rel=0.05) and after.std.std() < 1e-3
    assert torch.equal(before.mean, after.mean)  # only the noise changes, the latent mean is the same


def test_demo_preset_is_the_tiny_widths_one_stage_fewer_at_hop_256_with_a_quiet_posterior(music) -> None:
    demo = OmegaConf.load(conf_dir() / "model" / "vae" / "demo.yaml")
    tiny = OmegaConf.load(conf_dir() / "model" / "vae" / "tiny.yaml")
    for key in ("sample_rate", "latent_channels", "encoder_hidden_size", "decoder_channels"):
        assert demo[key] == tiny[key]
    assert demo.hop_length == 256 == math.prod(demo.downsampling_ratios)
    assert len(demo.downsampling_ratios) == len(tiny.downsampling_ratios) - 1
    vae = instantiate(demo).eval()
    with torch.no_grad():
        posterior = vae.encode(music[..., : 172 * 256])
    assert posterior.mean.shape[-1] == 172 and posterior.std.max() < 0.02


def test_a_bad_value_is_one_line_naming_the_key(tiny_config) -> None:
    with pytest.raises(RefrainInputError, match="initial_posterior_std"):
        build_oobleck_vae(**tiny_config, initial_posterior_std=2.0)
