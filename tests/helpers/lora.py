"""Tiny DiTs and conditionings for the LoRA tests (built in code, CPU, milliseconds)."""

from __future__ import annotations

from pathlib import Path

import torch

from refrain.lora.control import ControlConditioning
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.transformer import DiffusionTransformer

C, TEXT, VOCAB = 4, 8, 20


def tiny_dit(seed: int = 0, hidden: int = 32) -> DiffusionTransformer:
    torch.manual_seed(seed)
    model = DiffusionTransformer(
        latent_channels=C, hidden_size=hidden, num_layers=2, num_heads=4, intermediate_size=64, text_dim=TEXT,
        lyric_vocab_size=VOCAB, lyric_dim=16, lyric_conv_layers=1, repa_layer=1, zero_init_output=False,
    )  # fmt: skip
    return model.eval()


def plain_cond(batch: int = 2, frames: int = 10, seed: int = 1) -> DiTConditioning:
    g = torch.Generator().manual_seed(seed)
    return DiTConditioning(
        style=torch.randn(batch, 3, TEXT, generator=g),
        style_mask=torch.ones(batch, 3, dtype=torch.bool),
        lyrics=torch.randint(0, VOCAB, (batch, frames), generator=g),
    )


def control_cond(batch: int = 2, frames: int = 10, seed: int = 1) -> ControlConditioning:
    g = torch.Generator().manual_seed(seed + 100)
    return ControlConditioning.from_plain(
        plain_cond(batch, frames, seed),
        reference=torch.randn(batch, C, frames, generator=g),
        instrument=torch.arange(batch) % 2,
    )


def inputs(batch: int = 2, frames: int = 10, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, C, frames, generator=g), torch.rand(batch, generator=g)


@torch.no_grad()
def perturb_trainable(model: torch.nn.Module, seed: int = 3, std: float = 0.2) -> None:
    """Stand-in for a few optimiser steps: move every trainable tensor off its initial value."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(std * torch.randn(p.shape, generator=g))


BUNDLE_VAE = {
    "sample_rate": 16000, "hop_length": 256, "latent_channels": 8, "audio_channels": 2,
    "downsampling_ratios": [4, 8, 8], "channel_multiples": [1, 2, 2], "encoder_hidden_size": 16,
    "decoder_channels": 8, "chunk_seconds": 1.0, "overlap_seconds": 0.25,
}  # fmt: skip
BUNDLE_DIT = {
    "_target_": "refrain.models.dit.transformer.DiffusionTransformer",
    "latent_channels": 8, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
    "text_dim": 384, "lyric_vocab_size": 64, "lyric_dim": 16, "lyric_conv_layers": 1, "repa_layer": 1,
}  # fmt: skip


def tiny_bundle(root: Path, max_length: int = 48) -> Path:
    """A base DiT bundle (tiny VAE, a small vocabulary) written the way refrain-export writes one."""
    from refrain.bundles.dit import build_from_spec, save_dit_bundle, text_encoder_ref
    from refrain.bundles.vae import save_vae_bundle
    from refrain.models.vae.oobleck import build_oobleck_vae
    from refrain.text.vocab import PhonemeVocab

    torch.manual_seed(0)
    save_vae_bundle(root / "vae", build_oobleck_vae(**BUNDLE_VAE).autoencoder, {"model": {"vae": BUNDLE_VAE}})
    PhonemeVocab(["a", "b", "c"]).save(root / "vocab.json")
    g = torch.Generator().manual_seed(1)  # a "trained" base: no zero-initialised layer left at zero
    state = {
        k: v + 0.05 * torch.randn(v.shape, generator=g)
        for k, v in build_from_spec(BUNDLE_DIT).state_dict().items()
    }
    return save_dit_bundle(root / "base", state, BUNDLE_DIT, root / "vae", root / "vocab.json",
                           text_encoder_ref(None, max_length), {"model": {"dit": BUNDLE_DIT}})  # fmt: skip
