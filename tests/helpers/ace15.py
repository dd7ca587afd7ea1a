"""A tiny random ACE-Step 1.5 release folder, built offline from the real classes and saved in diffusers' layout.

transformer/ (AceStepTransformer1DModel), condition_encoder/ (AceStepConditionEncoder, with a random
silence latent so it matters), text_encoder/ (a 2-layer Qwen3), tokenizer/ (a byte-level BPE with
``<|endoftext|>``), vae/ (an AutoencoderOobleck at 48 kHz with hop 1920: 25 latent frames/s) and
scheduler/, written by ``AceStepPipeline.save_pretrained`` exactly as a user's download is laid out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import (
    AceStepPipeline,
    AceStepTransformer1DModel,
    AutoencoderOobleck,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
from diffusers.utils import logging as diffusers_logging
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

from refrain.models.backbones.ace15 import AceStep15, load_ace15
from refrain.models.vae.oobleck import OobleckVAE

END = "<|endoftext|>"
CHANNELS = 8
TEXT_DIM = 32
ATTENTION = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 4}


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with the 256 byte symbols and no merges, plus the end-of-text token (id 256)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([END])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token=END)


def tiny_pipeline(seed: int = 0, turbo: bool = False) -> AceStepPipeline:
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).eval()
    transformer = AceStepTransformer1DModel(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        in_channels=3 * CHANNELS,
        audio_acoustic_hidden_dim=CHANNELS,
        is_turbo=turbo,
        **ATTENTION,
    )
    encoder = AceStepConditionEncoder(
        hidden_size=32,
        intermediate_size=64,
        text_hidden_dim=TEXT_DIM,
        timbre_hidden_dim=CHANNELS,
        num_lyric_encoder_hidden_layers=2,
        num_timbre_encoder_hidden_layers=2,
        **ATTENTION,
    )
    encoder.silence_latent.copy_(0.5 * torch.randn(encoder.silence_latent.shape))
    vae = AutoencoderOobleck(
        encoder_hidden_size=2 * CHANNELS,
        downsampling_ratios=[2, 4, 4, 6, 10],
        channel_multiples=[1, 1, 1, 1, 1],
        decoder_channels=8,
        decoder_input_channels=CHANNELS,
        audio_channels=2,
        sampling_rate=48000,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    return AceStepPipeline(vae, text_encoder, tokenizer, transformer, encoder, scheduler)


def write_tiny_release(folder: str | Path, seed: int = 0, turbo: bool = False) -> Path:
    """Save the tiny pipeline as a release folder and return its path."""
    folder = Path(folder)
    tiny_pipeline(seed, turbo).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def ace15_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny release folder per test session (read-only by convention: tests copy before editing)."""
    return write_tiny_release(tmp_path_factory.mktemp("ace15") / "release")


@pytest.fixture(scope="module", name="backbone")
def ace15_backbone(ace15_release: Path) -> AceStep15:
    """refrain's wrapper over the tiny release (REPA on block 2), in eval mode; the fixture is ``backbone``."""
    return load_ace15(ace15_release, repa_layer=2).eval()


@pytest.fixture(scope="module", name="pipe")
def diffusers_pipe(ace15_release: Path) -> AceStepPipeline:
    """diffusers' AceStepPipeline over the tiny release, quiet; the fixture is ``pipe``."""
    diffusers_logging.set_verbosity_error()
    pipeline = AceStepPipeline.from_pretrained(ace15_release)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def write_low_rate_release(release: str | Path, folder: str | Path) -> Path:
    """A copy of ``release`` whose vae/ is an Oobleck at 1200 Hz with hop 48 (still 25 latent frames/s):
    a 30 s timbre reference is 36,000 samples instead of 1.44 M, so tests of it run in a fraction of a second."""
    import shutil

    folder = Path(folder)
    shutil.copytree(release, folder)
    torch.manual_seed(1)
    vae = AutoencoderOobleck(
        encoder_hidden_size=2 * CHANNELS,
        downsampling_ratios=[2, 4, 6],
        channel_multiples=[1, 1, 1],
        decoder_channels=8,
        decoder_input_channels=CHANNELS,
        audio_channels=2,
        sampling_rate=1200,
    )
    shutil.rmtree(folder / "vae")
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def ace15_low_rate_release(ace15_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny release with a 1200 Hz VAE (``write_low_rate_release``): fast timbre references."""
    return write_low_rate_release(ace15_release, tmp_path_factory.mktemp("ace15_low_rate") / "release")


@pytest.fixture
def vae_encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts one-pass VAE encodes (what a timbre reference costs when it is not read from the cache)."""
    calls: list[int] = []
    original = OobleckVAE.encode

    def counted(self, audio):
        calls.append(1)
        return original(self, audio)

    monkeypatch.setattr(OobleckVAE, "encode", counted)
    return calls
