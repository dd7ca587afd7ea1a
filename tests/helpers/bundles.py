"""A tiny exported DiT bundle for sampler tests, made the way a user makes one.

A tiny Oobleck VAE bundle, a phoneme vocabulary grown from real G2P output, and a DiT checkpoint laid out
as DiT training writes it (live weights under ``model.*``, the EMA under ``ema.shadow.*``, the resolved
config in ``checkpoint["refrain"]``), exported by ``refrain.bundles.export.export_dit``. The DiT is not trained:
its weights are its initialisation plus noise (so the zero-initialised output layers are not zero) and
the EMA is a different perturbation, so a test can tell which one was exported.
"""

from __future__ import annotations

from pathlib import Path

import torch

from refrain.bundles.dit import build_from_spec
from refrain.bundles.export import export_dit
from refrain.bundles.vae import save_vae_bundle
from refrain.models.vae.oobleck import build_oobleck_vae
from refrain.text.g2p import G2P
from refrain.text.vocab import PhonemeVocab

TINY_VAE = {
    "sample_rate": 44100, "hop_length": 1024, "latent_channels": 16, "audio_channels": 2,
    "downsampling_ratios": [4, 4, 8, 8], "channel_multiples": [1, 2, 4, 4], "encoder_hidden_size": 32,
    "decoder_channels": 16, "chunk_seconds": 1.0, "overlap_seconds": 0.25,
}  # fmt: skip
TINY_DIT = {
    "_target_": "refrain.models.dit.transformer.DiffusionTransformer",
    "latent_channels": 16, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
    "text_dim": 384, "lyric_vocab_size": 256, "lyric_dim": 16, "lyric_conv_layers": 1, "repa_layer": 1,
    "use_context": True,
}  # fmt: skip
VOCAB_TEXT = "hello night city lights\nwe are singing all the way home\nrun to the river under the moon"


def perturbed_state(spec: dict, seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_from_spec(spec)
    generator = torch.Generator().manual_seed(seed + 1)
    return {
        k: v + scale * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }


def write_checkpoint(root: Path, spec: dict | None = None, ema: bool = True) -> Path:
    """The VAE bundle, dataset vocabulary and DiT checkpoint under ``root``; returns the checkpoint."""
    spec = dict(spec or TINY_DIT)
    torch.manual_seed(0)
    vae = build_oobleck_vae(**TINY_VAE)
    vae_dir = root / "vae_bundle"
    if not vae_dir.exists():
        save_vae_bundle(vae_dir, vae.autoencoder, {"model": {"vae": TINY_VAE}})
    vocab = PhonemeVocab()
    vocab.encode(G2P().phonemize(VOCAB_TEXT, language="en"), grow=True)
    vocab.save(root / "dataset" / "phoneme_vocab.json")
    state = {f"model.{k}": v for k, v in perturbed_state(spec, 1).items()}
    if ema:
        state.update({f"ema.shadow.{k}": v for k, v in perturbed_state(spec, 2).items()})
        state["ema.num_updates"] = torch.tensor(5)
    config = {
        "model": {"dit": spec}, "vae_bundle": str(vae_dir), "dataset_path": str(root / "dataset"),
        "text_encoder_dir": None, "shift": 3.0, "data": {"text_max_length": 64},
    }  # fmt: skip
    checkpoint = {
        "state_dict": state,
        "refrain": {"config": config, "format_version": 1},
        "global_step": 5,
        "epoch": 0,
    }
    path = root / "last.ckpt"
    torch.save(checkpoint, path)
    return path


def make_tiny_bundle(root: Path) -> Path:
    """A complete bundle at ``root / "bundle"``."""
    root.mkdir(parents=True, exist_ok=True)
    return export_dit(write_checkpoint(root), root / "bundle")
