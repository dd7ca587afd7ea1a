"""LoRA JSON parsing: ACE-Step's files load unchanged, refrain's sections parse, bad values get one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refrain.errors import RefrainInputError
from refrain.lora.config import load_lora_spec, parse_lora_spec

REPO = Path(__file__).resolve().parents[2]


def test_acestep_file_loads_as_plain_text2music() -> None:
    spec = parse_lora_spec(
        {
            "r": 256,
            "lora_alpha": 32,
            "target_modules": ["to_q", "to_k", "to_v", "to_out.0"],
            "use_rslora": True,
        }
    )
    assert spec.variant == "text2music" and spec.control is None and not spec.null_lyrics
    config = spec.lora_config()
    assert (config.r, config.lora_alpha, config.use_rslora) == (256, 32, True)
    assert set(config.target_modules) == {"to_q", "to_k", "to_v", "to_out.0"}


def test_refrain_sections_override_variant_defaults() -> None:
    spec = parse_lora_spec(
        {
            "variant": "stemgen",
            "r": 8,
            "lora_alpha": 16,
            "data": {"exclude_tags": ["live"]},
            "conditioning": {"instruments": ["drums", "bass"], "control_width": 64, "reference": "mix"},
        }
    )
    assert spec.control is not None
    assert spec.control.instruments == ("drums", "bass") and spec.control.width == 64
    assert (spec.control.target, spec.control.reference) == ("stem", "mix")
    assert spec.data.exclude_tags == ("live",)
    again = parse_lora_spec(json.loads(json.dumps(spec.to_dict())))
    assert again == parse_lora_spec(spec.to_dict())
    assert again.control == spec.control and again.peft == spec.peft


def test_variant_defaults() -> None:
    assert parse_lora_spec({"variant": "text2sample"}).null_lyrics
    assert "rap" in parse_lora_spec({"variant": "rapmachine"}).data.include_tags
    s2a = parse_lora_spec({"variant": "singing2accompaniment"}).control
    assert s2a is not None and (s2a.instruments, s2a.target, s2a.reference) == (("vocals",), "rest", "stem")
    assert parse_lora_spec({"variant": "lyric2vocal"}).data.roles == ("stem:vocals",)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"r": 0}, "r: 0 is not a positive integer"),
        ({"r": 4.5}, "r: 4.5 is not a positive integer"),
        ({"r": True}, "r: True is not a positive integer"),
        ({"lora_alpha": -1}, "lora_alpha: -1 is not a positive number"),
        ({"lora_alpha": float("nan")}, "lora_alpha: nan is not a positive number"),
        ({"rank_pattern": {"to_q": 0}}, "rank_pattern.to_q"),
        ({"lora_dropout": 1.0}, "lora_dropout: 1.0 is not in [0, 1)"),
        ({"target_module": ["to_q"]}, "did you mean target_modules"),
        ({"variant": "stemgenn"}, "unknown variant 'stemgenn'"),
        ({"data": {"include": ["rap"]}}, "data.include: unknown key"),
        ({"data": {"roles": ["vocal"]}}, "'vocal' is not a multitrack role"),
        ({"conditioning": {"instruments": ["x"]}}, "variant text2music has no reference path"),
        ({"variant": "stemgen", "conditioning": {"target": "rest", "reference": "rest"}}, "both 'rest'"),
        ({"variant": "stemgen", "conditioning": {"control_kernel_size": 4}}, "is even"),
        ({"target_modules": []}, "neither a regex string nor a list"),
        ({"layers_pattern": "blocks"}, "peft.LoraConfig rejects it"),
    ],
)
def test_bad_values_give_one_line(raw: dict, needle: str) -> None:
    with pytest.raises(RefrainInputError) as info:
        parse_lora_spec(raw, "x.json")
    message = str(info.value)
    assert needle in message and "\n" not in message and message.startswith("x.json")


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"r": 8,,}')
    with pytest.raises(RefrainInputError, match="invalid JSON at line 1"):
        load_lora_spec(bad)
    with pytest.raises(RefrainInputError, match="does not exist"):
        load_lora_spec(tmp_path / "missing.json")


def test_shipped_configs_parse() -> None:
    files = sorted((REPO / "lora_configs").glob("*.json"))
    assert {f.stem for f in files} >= {
        "lyric2vocal",
        "text2sample",
        "rapmachine",
        "stemgen",
        "singing2accompaniment",
    }
    for file in files:
        spec = load_lora_spec(file)
        assert spec.variant == file.stem
