"""Adapter folders: PEFT round trip, several adapters with scales, switching off, merging, wrong bases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.lora import control_cond, inputs, perturb_trainable, plain_cond, tiny_dit
from peft import PeftModel

from refrain.errors import RefrainInputError
from refrain.lora.adapters import (
    AdapterRef,
    adapters_off,
    load_adapters,
    merge_adapters,
    read_adapter_spec,
    save_adapter,
    set_adapter_scales,
)
from refrain.lora.config import parse_lora_spec
from refrain.lora.control import attach_control, control_modules
from refrain.lora.inject import inject_lora

PLAIN = {"variant": "rapmachine", "r": 4, "lora_alpha": 8}
STEM = {
    "variant": "stemgen",
    "r": 2,
    "lora_alpha": 2,
    "target_modules": ["attn.to_q", "attn.to_v"],
    "conditioning": {"control_width": 16},
}


def trained_adapter(folder: Path, raw: dict, seed: int, hidden: int = 32) -> tuple[Path, torch.nn.Module]:
    spec = parse_lora_spec(raw)
    model = inject_lora(tiny_dit(hidden=hidden), spec)
    perturb_trainable(model, seed=seed)
    return save_adapter(model, folder, spec, {"bundle": "base"}), model


def test_folder_is_standard_peft_and_reloads_equal(tmp_path: Path) -> None:
    folder, model = trained_adapter(tmp_path / "rap", PLAIN, seed=1)
    assert {p.name for p in folder.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "refrain_lora.json",
    }
    assert json.loads((folder / "refrain_lora.json").read_text())["refrain_base"] == {"bundle": "base"}
    assert read_adapter_spec(folder).variant == "rapmachine"
    x, sigma = inputs()
    cond = plain_cond()
    reloaded = PeftModel.from_pretrained(tiny_dit(), str(folder))  # plain PEFT, no refrain code involved
    assert torch.allclose(reloaded(x, sigma, cond).velocity, model(x, sigma, cond).velocity, atol=1e-6)


def test_control_adapter_reloads_with_its_path(tmp_path: Path) -> None:
    folder, model = trained_adapter(tmp_path / "stem", STEM, seed=2)
    base = tiny_dit()
    attach_control(base, read_adapter_spec(folder).control)
    reloaded = PeftModel.from_pretrained(base, str(folder))
    x, sigma = inputs()
    cond = control_cond()
    assert torch.allclose(reloaded(x, sigma, cond).velocity, model(x, sigma, cond).velocity, atol=1e-6)


def test_two_adapters_scales_off_and_merge(tmp_path: Path) -> None:
    rap, _ = trained_adapter(tmp_path / "rap", PLAIN, seed=1)
    stem, _ = trained_adapter(tmp_path / "stem", STEM, seed=2)
    x, sigma = inputs()
    cond = control_cond()
    base_out = tiny_dit()(x, sigma, cond.plain()).velocity
    loaded = load_adapters(tiny_dit(), [AdapterRef(rap, 0.7), AdapterRef(stem, 1.3)])
    assert loaded.names == ["rap", "stem"] and loaded.control_spec is not None
    both = loaded.model(x, sigma, cond).velocity
    assert not torch.allclose(both, base_out, atol=1e-4)
    with adapters_off(loaded.model):
        assert torch.equal(loaded.model(x, sigma, cond).velocity, base_out)  # LoRA and reference path off
    set_adapter_scales(loaded.model, {"rap": 0.0, "stem": 0.0})
    assert torch.allclose(loaded.model(x, sigma, cond).velocity, base_out, atol=1e-6)
    set_adapter_scales(loaded.model, {"rap": 0.0, "stem": 1.3})
    only_stem = loaded.model(x, sigma, cond).velocity
    set_adapter_scales(loaded.model, loaded.scales)
    assert torch.allclose(loaded.model(x, sigma, cond).velocity, both)
    assert not torch.allclose(only_stem, both, atol=1e-4)  # the rap adapter contributes at 0.7
    merged = merge_adapters(loaded)
    assert not isinstance(merged, PeftModel) and len(control_modules(merged)) == 1
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(x, sigma, cond).velocity, both, atol=1e-5, rtol=1e-4)


def test_adapter_on_a_base_of_another_shape(tmp_path: Path) -> None:
    folder, _ = trained_adapter(tmp_path / "rap", PLAIN, seed=1, hidden=48)
    with pytest.raises(RefrainInputError) as info:
        load_adapters(tiny_dit(hidden=32), [AdapterRef(folder)])
    message = str(info.value)
    assert "is 32->32 in this base but the adapter's lora_A is [4, 48]" in message and "\n" not in message


def test_adapter_for_another_architecture(tmp_path: Path) -> None:
    raw = {**PLAIN, "target_modules": ["to_q"]}
    folder, _ = trained_adapter(tmp_path / "rap", raw, seed=1)
    small = tiny_dit()
    small.blocks = small.blocks[:1]
    with pytest.raises(
        RefrainInputError, match="adapts 'blocks.1.attn.to_q', which the base DiT does not have"
    ):
        load_adapters(small, [AdapterRef(folder)])


def test_two_control_adapters_are_refused(tmp_path: Path) -> None:
    a, _ = trained_adapter(tmp_path / "a", STEM, seed=1)
    b, _ = trained_adapter(tmp_path / "b", STEM, seed=2)
    with pytest.raises(RefrainInputError, match="more than one adapter with a reference path"):
        load_adapters(tiny_dit(), [AdapterRef(a), AdapterRef(b)])


def test_adapter_ref_parse(tmp_path: Path) -> None:
    assert AdapterRef.parse("exps/a/adapter:0.5") == AdapterRef(Path("exps/a/adapter"), 0.5)
    assert AdapterRef.parse("exps/a/adapter") == AdapterRef(Path("exps/a/adapter"), 1.0)
    with pytest.raises(RefrainInputError, match="not a PEFT adapter folder"):
        read_adapter_spec(tmp_path)
