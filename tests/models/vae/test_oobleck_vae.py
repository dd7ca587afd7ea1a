"""The Oobleck wrapper: presets, shapes, KL, gradient checkpointing, loading a released-style folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderOobleck
from hydra.utils import instantiate
from omegaconf import OmegaConf

from refrain.config import conf_dir
from refrain.errors import RefrainInputError
from refrain.models.vae.oobleck import OobleckVAE, build_oobleck_vae


def preset_on_meta(name: str) -> OobleckVAE:
    cfg = OmegaConf.load(conf_dir() / "model" / "vae" / f"{name}.yaml")
    with torch.device("meta"):
        return instantiate(cfg)


@pytest.mark.parametrize(
    ("name", "rate", "hop", "fps", "low", "high"),
    [
        ("sao", 44100, 2048, 21.533, 155e6, 157e6),
        ("ace15", 48000, 1920, 25.0, 160e6, 175e6),
        ("mid", 44100, 2048, 21.533, 30e6, 50e6),
        ("tiny", 44100, 1024, 43.066, 0.2e6, 3e6),
    ],
)
def test_presets_build_on_meta_with_expected_size(name, rate, hop, fps, low, high) -> None:
    vae = preset_on_meta(name)
    count = sum(p.numel() for p in vae.parameters())
    print(f"{name}: {count / 1e6:.2f} M parameters, {vae.frame_rate:.3f} latent frames/s")
    assert low < count < high
    assert (vae.sample_rate, vae.hop_length, vae.latent_channels) == (
        rate,
        hop,
        OmegaConf.load(conf_dir() / "model" / "vae" / f"{name}.yaml").latent_channels,
    )
    assert vae.frame_rate == pytest.approx(fps, abs=1e-3)


def test_sao_preset_is_diffusers_default_shape() -> None:
    """diffusers' default AutoencoderOobleck is the SAO VAE; the preset must match it name for name."""
    with torch.device("meta"):
        default = AutoencoderOobleck()
    sao = preset_on_meta("sao")
    keys = (
        "encoder_hidden_size",
        "downsampling_ratios",
        "channel_multiples",
        "decoder_channels",
        "decoder_input_channels",
        "audio_channels",
        "sampling_rate",
    )
    plain = {k: list(v) if isinstance(v, list | tuple) else v for k, v in sao.autoencoder.config.items()}
    assert {k: plain[k] for k in keys} == {k: default.config[k] for k in keys}
    shapes = {n: p.shape for n, p in default.named_parameters()}
    assert {n.removeprefix("autoencoder."): p.shape for n, p in sao.named_parameters()} == shapes


def test_encode_decode_shapes_and_kl(tiny_vae: OobleckVAE, music: torch.Tensor) -> None:
    out = tiny_vae(music, sample_posterior=True, generator=torch.Generator().manual_seed(1))
    frames = music.shape[-1] // tiny_vae.hop_length
    assert out.latents.shape == (1, 4, frames)
    assert out.reconstruction.shape == music.shape
    assert torch.all(out.posterior.std > 0)
    # KL of N(mean, std) to N(0, 1), summed over channels, averaged over frames: recompute by hand.
    mean, std = out.posterior.mean, out.posterior.std
    by_hand = (mean.pow(2) + std.pow(2) - 2 * torch.log(std) - 1).sum(1).mean()
    assert tiny_vae.kl_loss(out.posterior).item() == pytest.approx(by_hand.item(), rel=1e-5)
    # sampling is mean + std * noise: two draws differ, the mode does not
    again = tiny_vae(music, sample_posterior=True, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(again.latents, out.latents)
    assert torch.equal(tiny_vae(music, sample_posterior=False).latents, out.posterior.mean)


def test_gradient_checkpointing_gives_same_output_and_gradients(
    music: torch.Tensor, tiny_config: dict
) -> None:
    torch.manual_seed(0)
    plain = build_oobleck_vae(**tiny_config).train()
    checkpointed = build_oobleck_vae(**tiny_config, gradient_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        recon = model(music, sample_posterior=False).reconstruction
        recon.pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_freeze_encoder_leaves_only_decoder_trainable(tiny_vae: OobleckVAE) -> None:
    tiny_vae.freeze_encoder()
    trainable = {n for n, p in tiny_vae.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("autoencoder.decoder.") for n in trainable)


def test_pretrained_folder_loads_with_its_own_parameter_names(
    tmp_path: Path, tiny_vae: OobleckVAE, tiny_config: dict
) -> None:
    TINY = tiny_config
    tiny_vae.autoencoder.save_pretrained(tmp_path / "pipeline" / "vae")
    loaded = build_oobleck_vae(**TINY, pretrained_path=str(tmp_path / "pipeline"))
    for (name, a), (_, b) in zip(tiny_vae.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(RefrainInputError, match="pick the matching preset"):
        build_oobleck_vae(**{**TINY, "sample_rate": 48000}, pretrained_path=str(tmp_path / "pipeline"))
    with pytest.raises(RefrainInputError, match="config.json missing"):
        build_oobleck_vae(**TINY, pretrained_path=str(tmp_path / "nowhere"))


def test_inconsistent_preset_is_a_one_line_error(tiny_config: dict) -> None:
    TINY = tiny_config
    with pytest.raises(RefrainInputError, match="hop_length"):
        build_oobleck_vae(**TINY, hop_length=100)
    with pytest.raises(RefrainInputError, match="encoder_hidden_size"):
        build_oobleck_vae(**{**TINY, "encoder_hidden_size": 10})


def test_audio_not_a_multiple_of_hop_is_rejected(tiny_vae: OobleckVAE) -> None:
    with pytest.raises(RefrainInputError, match="multiple of the VAE hop 64"):
        tiny_vae.encode(torch.zeros(1, 2, 100))
    assert tiny_vae.pad_to_hop(torch.zeros(1, 2, 100)).shape[-1] == 128
