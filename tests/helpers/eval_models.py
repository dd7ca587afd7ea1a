"""Tiny random evaluation models of the real classes, saved with save_pretrained as a user's download is:
a CLAP (ClapModel + ClapFeatureExtractor + byte-level tokenizer), a Whisper (WhisperForConditionalGeneration
+ WhisperFeatureExtractor + byte-level tokenizer with Whisper's special tokens) and a HuBERT (MERT's shape)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    GenerationConfig,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

from refrain.models.teachers import create_random_hubert

WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def byte_tokenizer(specials: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the 256 byte symbols, no merges, plus ``specials`` (the first is end/pad)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=specials[0], pad_token=specials[0])


def write_tiny_clap(folder: Path, seed: int = 0) -> Path:
    tok = byte_tokenizer(["<|endoftext|>"])
    text = ClapTextConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=len(tok) + 80,
        pad_token_id=tok.pad_token_id,
    )
    audio = ClapAudioConfig(
        window_size=4,
        num_mel_bins=64,
        spec_size=256,
        patch_size=4,
        patch_stride=(4, 4),
        depths=[1, 1],
        num_attention_heads=[2, 2],
        hidden_size=32,
        patch_embeds_hidden_size=16,
        enable_fusion=False,
    )
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    ClapFeatureExtractor(feature_size=64, max_length_s=2, truncation="rand_trunc").save_pretrained(folder)
    return folder


def write_tiny_whisper(folder: Path, seed: int = 0) -> Path:
    tok = byte_tokenizer(WHISPER_SPECIALS)
    ids = {s: tok.convert_tokens_to_ids(s) for s in WHISPER_SPECIALS}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tok),
        num_mel_bins=80,
        encoder_layers=1,
        decoder_layers=1,
        d_model=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
        decoder_start_token_id=start,
        eos_token_id=end,
        pad_token_id=end,
        bos_token_id=end,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start,
        eos_token_id=end,
        pad_token_id=end,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"]},
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def write_eval_models(root: Path) -> dict[str, Path]:
    """clap/, whisper/ and mert/ (a tiny HuBERT) under ``root``."""
    return {
        "clap": write_tiny_clap(root / "clap"),
        "whisper": write_tiny_whisper(root / "whisper"),
        "mert": create_random_hubert(root / "mert", hidden_size=16, num_layers=2, conv_channels=8),
    }
