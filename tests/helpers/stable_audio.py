"""A tiny random Stable Audio Open release folder, built offline from the real classes in diffusers' layout.

transformer/ (StableAudioDiTModel), projection_model/ (StableAudioProjectionModel), text_encoder/ (a 1-layer
T5EncoderModel), tokenizer/ (a T5TokenizerFast over a small word-level vocabulary, ``model_max_length`` 12),
vae/ (an AutoencoderOobleck at 44.1 kHz with the release's strides 2, 4, 4, 8, 8: 21.5 latent frames/s)
and scheduler/ (the release's CosineDPMSolverMultistepScheduler), written by
``StableAudioPipeline.save_pretrained`` exactly as a user's download is laid out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderOobleck,
    CosineDPMSolverMultistepScheduler,
    StableAudioDiTModel,
    StableAudioPipeline,
)
from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

CHANNELS = 8
FRAMES = 24  # the transformer's sample_size: the pipeline always generates this many latent frames
WORDS = (
    "calm",
    "piano",
    "fast",
    "drums",
    "dreamy",
    "synth",
    "pop",
    "female",
    "vocals",
    "warm",
    "bass",
    "guitar",
    "slow",
    "rock",
    "techno",
    "ambient",
)


def t5_tokenizer(max_length: int = 12) -> T5TokenizerFast:
    """T5's own (Unigram) tokenizer class over a small vocabulary: pad 0, eos 1, unk 2, then the words."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + word, -1.0) for word in WORDS]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)


def tiny_pipeline(seed: int = 0) -> StableAudioPipeline:
    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4)
    ).eval()
    projection = StableAudioProjectionModel(
        text_encoder_dim=16, conditioning_dim=24, min_value=0, max_value=512
    )
    transformer = StableAudioDiTModel(
        sample_size=FRAMES,
        in_channels=CHANNELS,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=4,
        num_key_value_attention_heads=2,
        out_channels=CHANNELS,
        cross_attention_dim=16,
        time_proj_dim=16,
        global_states_input_dim=48,
        cross_attention_input_dim=24,
    )
    with torch.no_grad():  # the 1x1 pre/post convs and projections start small: give every weight a value
        for p in transformer.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    vae = AutoencoderOobleck(
        encoder_hidden_size=2 * CHANNELS,
        downsampling_ratios=[2, 4, 4, 8, 8],
        channel_multiples=[1, 1, 1, 1, 1],
        decoder_channels=8,
        decoder_input_channels=CHANNELS,
        audio_channels=2,
        sampling_rate=44100,
    )
    scheduler = CosineDPMSolverMultistepScheduler()  # the release's: sigma 0.3 .. 500, sigma_data 1, v
    return StableAudioPipeline(vae, text_encoder, projection, tokenizer, transformer, scheduler)


def write_tiny_release(folder: str | Path, seed: int = 0) -> Path:
    """Save the tiny pipeline as a release folder and return its path."""
    folder = Path(folder)
    tiny_pipeline(seed).save_pretrained(folder, safe_serialization=True)
    return folder


def cached_release(base: Path) -> Path:
    """A release folder under ``base`` (written once; later calls reuse it)."""
    folder = base / "stable_audio_open"
    return folder if (folder / "model_index.json").is_file() else write_tiny_release(folder)


def sao_batch(size: int, frames: int) -> dict[str, Any]:
    """A DiT batch in the format the backbone reads: latents, frame mask, prompt text, crop start."""
    g = torch.Generator().manual_seed(3)
    return {
        "latent_mean": torch.randn(size, CHANNELS, frames, generator=g),
        "latent_std": torch.full((size, CHANNELS, frames), 0.1),
        "frame_mask": torch.ones(size, frames, dtype=torch.bool),
        "prompts": ["calm piano", "fast drums techno"][:size],
        "crop_start": torch.tensor([0.0, 12.5])[:size],
    }
