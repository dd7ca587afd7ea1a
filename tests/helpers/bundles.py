"""The tiny bundles every test samples from or trains on, made the way a user makes them (one home for
their sizes and for the code that writes them).

``make_tiny_bundle``: the sampler's bundle (44.1 kHz VAE, 16 latent channels, a phoneme vocabulary grown
from real G2P output), exported by ``refrain.bundles.export.export_dit`` from a DiT checkpoint laid out as
DiT training writes it (live weights under ``model.*``, the EMA under ``ema.shadow.*``, the resolved
config in ``checkpoint["refrain"]``). The DiT is not trained: its weights are its initialisation plus
noise (so the zero-initialised output layers are not zero) and the EMA is a different perturbation, so a
test can tell which one was exported.

``fast_base_bundle``: the LoRA tests' base (16 kHz VAE with hop 256, 8 latent channels, the vocabulary
a, b, c), written directly by ``save_dit_bundle``: LoRA tests train and merge adapters many times and
need the smallest model that still has every layer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from refrain.bundles.dit import build_from_spec, save_dit_bundle, text_encoder_ref
from refrain.bundles.export import CHECKPOINT_FORMAT_VERSION, export_dit
from refrain.bundles.vae import save_vae_bundle
from refrain.models.vae.oobleck import build_oobleck_vae
from refrain.text.g2p import G2P
from refrain.text.vocab import VOCAB_FILE, PhonemeVocab

TINY_VAE = {
    "sample_rate": 44100,
    "hop_length": 1024,
    "latent_channels": 16,
    "audio_channels": 2,
    "downsampling_ratios": [4, 4, 8, 8],
    "channel_multiples": [1, 2, 4, 4],
    "encoder_hidden_size": 32,
    "decoder_channels": 16,
    "chunk_seconds": 1.0,
    "overlap_seconds": 0.25,
}
TINY_DIT = {
    "_target_": "refrain.models.dit.transformer.DiffusionTransformer",
    "latent_channels": 16,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 64,
    "text_dim": 384,
    "lyric_vocab_size": 256,
    "lyric_dim": 16,
    "lyric_conv_layers": 1,
    "repa_layer": 1,
    "use_context": True,
}
VOCAB_TEXT = "hello night city lights\nwe are singing all the way home\nrun to the river under the moon"
FAST_VAE = {
    "sample_rate": 16000,
    "hop_length": 256,
    "latent_channels": 8,
    "audio_channels": 2,
    "downsampling_ratios": [4, 8, 8],
    "channel_multiples": [1, 2, 2],
    "encoder_hidden_size": 16,
    "decoder_channels": 8,
    "chunk_seconds": 1.0,
    "overlap_seconds": 0.25,
}
FAST_DIT = {
    "_target_": "refrain.models.dit.transformer.DiffusionTransformer",
    "latent_channels": 8,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 64,
    "text_dim": 384,
    "lyric_vocab_size": 64,
    "lyric_dim": 16,
    "lyric_conv_layers": 1,
    "repa_layer": 1,
}


def perturbed_state(spec: dict, seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_from_spec(spec)
    generator = torch.Generator().manual_seed(seed + 1)
    return {
        k: v + scale * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }


def save_vae(folder: Path, preset: dict | None = None) -> Path:
    """A VAE bundle of ``preset`` (default TINY_VAE) with seed-0 weights."""
    preset = dict(preset or TINY_VAE)
    torch.manual_seed(0)
    return save_vae_bundle(folder, build_oobleck_vae(**preset).autoencoder, {"model": {"vae": preset}})


def save_checkpoint(
    path: Path,
    spec: dict,
    vae_dir: Path,
    dataset: Path,
    ema: bool = False,
    text_max_length: int = 64,
    global_step: int = 5,
) -> Path:
    """A DiT checkpoint as training writes it: perturbed live weights (seed 1), the EMA (seed 2) when
    ``ema``, and the resolved config export reads."""
    state = {f"model.{k}": v for k, v in perturbed_state(spec, 1).items()}
    if ema:
        state.update({f"ema.shadow.{k}": v for k, v in perturbed_state(spec, 2).items()})
        state["ema.num_updates"] = torch.tensor(5)
    config = {
        "model": {"dit": spec},
        "vae_bundle": str(vae_dir),
        "dataset_path": str(dataset),
        "text_encoder_dir": None,
        "shift": 3.0,
        "data": {"text_max_length": text_max_length},
    }
    checkpoint = {
        "state_dict": state,
        "refrain": {"config": config, "format_version": CHECKPOINT_FORMAT_VERSION},
        "global_step": global_step,
        "epoch": 0,
    }
    torch.save(checkpoint, path)
    return path


def write_checkpoint(root: Path, spec: dict | None = None, ema: bool = True) -> Path:
    """The VAE bundle, dataset vocabulary and DiT checkpoint under ``root``; returns the checkpoint."""
    vae_dir = root / "vae_bundle"
    if not vae_dir.exists():
        save_vae(vae_dir)
    vocab = PhonemeVocab()
    vocab.encode(G2P().phonemize(VOCAB_TEXT, language="en"), grow=True)
    vocab.save(root / "dataset" / VOCAB_FILE)
    return save_checkpoint(root / "last.ckpt", dict(spec or TINY_DIT), vae_dir, root / "dataset", ema=ema)


def make_tiny_bundle(root: Path) -> Path:
    """A complete bundle at ``root / "bundle"``."""
    root.mkdir(parents=True, exist_ok=True)
    return export_dit(write_checkpoint(root), root / "bundle")


def fast_base_bundle(root: Path, max_length: int = 48) -> Path:
    """The LoRA tests' base DiT bundle at ``root / "base"`` (FAST_VAE, FAST_DIT, vocabulary a, b, c)."""
    save_vae(root / "vae", FAST_VAE)
    PhonemeVocab(["a", "b", "c"]).save(root / "vocab.json")
    g = torch.Generator().manual_seed(1)  # a "trained" base: no zero-initialised layer left at zero
    state = {
        k: v + 0.05 * torch.randn(v.shape, generator=g)
        for k, v in build_from_spec(FAST_DIT).state_dict().items()
    }
    return save_dit_bundle(
        root / "base",
        state,
        FAST_DIT,
        root / "vae",
        root / "vocab.json",
        text_encoder_ref(None, max_length),
        {"model": {"dit": FAST_DIT}},
    )
