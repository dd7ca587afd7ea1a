"""Frozen style-prompt encoder: the bundled all-MiniLM-L6-v2 and any local Hugging Face encoder folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from refrain.errors import RefrainInputError
from refrain.models.text_encoder import TextEncoder, default_text_encoder_dir


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def test_default_encoder_gives_384_d_states_and_mask(encoder: TextEncoder) -> None:
    out = encoder(["dreamy lo-fi hip hop, mellow piano", "metal"])
    assert encoder.hidden_size == 384
    assert out.hidden.shape[0] == 2 and out.hidden.shape[-1] == 384 and out.pooled.shape == (2, 384)
    assert out.mask.dtype == torch.bool and out.mask.shape == out.hidden.shape[:2]
    assert out.mask[0].sum() > out.mask[1].sum()  # the short prompt is padded
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_similar_prompts_are_closer_than_unrelated(encoder: TextEncoder) -> None:
    pooled = encoder(
        [
            "upbeat pop song with female vocals and synths",
            "energetic pop track, female singer, synthesizer",
            "instructions for filing a tax return",
        ]
    ).pooled
    close = float(F.cosine_similarity(pooled[0], pooled[1], dim=0))
    far = float(F.cosine_similarity(pooled[0], pooled[2], dim=0))
    print(f"\ncosine similar {close:.3f} vs unrelated {far:.3f}")
    assert close > far + 0.3


def test_encoder_is_frozen_and_deterministic(encoder: TextEncoder) -> None:
    encoder.train()
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    a, b = encoder(["piano ballad"]), encoder(["piano ballad"])
    assert torch.equal(a.hidden, b.hidden) and not a.hidden.requires_grad


def test_any_local_encoder_folder_works(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertModel

    AutoTokenizer.from_pretrained(str(default_text_encoder_dir()), local_files_only=True).save_pretrained(
        tmp_path
    )
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(tmp_path)
    enc = TextEncoder(tmp_path, max_length=8)
    out = enc(["a very long prompt that the tokenizer will have to truncate somewhere"])
    assert enc.hidden_size == 32 and out.hidden.shape == (1, 8, 32)


def test_missing_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(RefrainInputError, match=r"config\.json missing.*Fix:"):
        TextEncoder(tmp_path / "absent")
