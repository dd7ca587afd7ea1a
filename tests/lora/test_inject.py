"""LoRA injection with PEFT: only adapter parameters train, targets are checked with one-line errors."""

from __future__ import annotations

import pytest
import torch
from helpers.lora import inputs, perturb_trainable, plain_cond, tiny_dit
from peft import PeftModel

from refrain.errors import RefrainInputError
from refrain.lora.config import parse_lora_spec
from refrain.lora.inject import adaptable_modules, check_targets, inject_lora, short_names, trainable_names


def test_only_lora_parameters_train_and_start_as_identity() -> None:
    base = tiny_dit()
    x, sigma = inputs()
    cond = plain_cond()
    expected = base(x, sigma, cond).velocity
    model = inject_lora(tiny_dit(), parse_lora_spec({"r": 4, "lora_alpha": 8}))
    assert isinstance(model, PeftModel)
    names = trainable_names(model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert len(names) == 2 * 2 * 2 * 4  # 2 blocks x (self, cross) x 4 projections x (A, B)
    assert torch.equal(model(x, sigma, cond).velocity, expected)  # lora_B starts at zero
    perturb_trainable(model)
    assert not torch.allclose(model(x, sigma, cond).velocity, expected)
    frozen = dict(tiny_dit().named_parameters())
    for name, p in model.get_base_model().named_parameters():
        if name in frozen:  # base weights untouched by the perturbation (only adapters moved)
            assert torch.equal(p, frozen[name]), name


def test_rank_pattern_and_regex_targets() -> None:
    spec = parse_lora_spec({"r": 4, "lora_alpha": 4, "target_modules": r"blocks\.1\.attn\.to_(q|v)"})
    model = inject_lora(tiny_dit(), spec)
    adapted = sorted({n.split(".lora_")[0] for n in trainable_names(model)})
    assert adapted == ["base_model.model.blocks.1.attn.to_q", "base_model.model.blocks.1.attn.to_v"]


def test_unknown_target_lists_what_would_match() -> None:
    spec = parse_lora_spec({"r": 4, "lora_alpha": 4, "target_modules": ["to_q", "linear_q"]}, "ace.json")
    with pytest.raises(RefrainInputError) as info:
        inject_lora(tiny_dit(), spec)
    message = str(info.value)
    assert "'linear_q' matches nothing" in message and "attn.to_q" in message and "\n" not in message


def test_every_unmatched_acestep_target_is_named_in_one_error() -> None:
    """ACE-Step's own example config: four names match nothing here; one run reports all four."""
    targets = [
        "speaker_embedder",
        "linear_q",
        "linear_k",
        "linear_v",
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "to_qq",
    ]
    spec = parse_lora_spec({"r": 4, "lora_alpha": 4, "target_modules": targets}, "acestep.json")
    with pytest.raises(RefrainInputError) as info:
        inject_lora(tiny_dit(), spec)
    message = str(info.value)
    assert "\n" not in message and message.startswith("acestep.json: target_modules: 5 of 9 entries")
    for name in ("speaker_embedder", "linear_q", "linear_k", "linear_v", "to_qq"):
        assert f"'{name}' matches nothing" in message, name
    assert "conditioner.lyric_proj" in message and "conditioner.speaker_proj" in message  # ACE-Step's roles
    assert "'to_qq' matches nothing (closest: attn.to_q" in message  # difflib's nearest names


def test_target_of_wrong_kind() -> None:
    spec = parse_lora_spec({"r": 4, "lora_alpha": 4, "target_modules": ["norm_q"]}, "x.json")
    with pytest.raises(RefrainInputError, match="matches only RMSNorm modules"):
        check_targets(tiny_dit(), spec.lora_config())


def test_short_names() -> None:
    names = short_names(adaptable_modules(tiny_dit()))
    assert "attn.to_q" in names and "cross_attn.to_out.0" in names and "proj_in" in names
    assert len(names) == len(set(names))
