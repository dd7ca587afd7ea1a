"""The model registry: what a bundle may name, how old specs map, and that adding a backbone is one line."""

from __future__ import annotations

import math
import sys
import types

import pytest
from helpers.bundles import TINY_DIT

from refrain.bundles import registry
from refrain.bundles.registry import (
    build_model,
    canonical_spec,
    register_model,
    registered_models,
    spec_class,
)
from refrain.errors import RefrainInputError
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer

SIZES = {k: v for k, v in TINY_DIT.items() if k != "_target_"}
ARGS = {"config": {**DiTConfig().to_dict(), **SIZES}}  # the whole DiTConfig, also from a flat older spec


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are forgotten afterwards."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    monkeypatch.setattr(registry, "_BY_TARGET", dict(registry._BY_TARGET))


def test_the_exact_hydra_target_of_a_registered_model_maps_to_its_name() -> None:
    assert registered_models()["dit"] == "refrain.models.dit.transformer:DiffusionTransformer"
    legacy = {**TINY_DIT, "_convert_": "object"}
    assert canonical_spec(legacy) == {"class": "dit", **ARGS}
    assert canonical_spec(canonical_spec(legacy)) == canonical_spec(legacy)  # idempotent
    assert isinstance(build_model(legacy), DiffusionTransformer)
    for near_miss in (
        "refrain.models.dit.transformer.DiffusionTransformer ",
        "refrain.models.dit.DiffusionTransformer",
    ):
        with pytest.raises(RefrainInputError, match="not a model refrain builds from a file"):
            spec_class({"_target_": near_miss})


def test_nested_model_specs_are_canonical_and_checked_too() -> None:
    merged = {"_target_": "refrain.lora.model.build_adapted_dit", "base": TINY_DIT, "null_lyrics": True}
    assert canonical_spec(merged) == {
        "class": "lora_adapted_dit",
        "base": {"class": "dit", **ARGS},
        "null_lyrics": True,
    }
    with pytest.raises(RefrainInputError, match=r"^model\.base\._target_: 'os\.system'"):
        canonical_spec({"class": "lora_adapted_dit", "base": {"_target_": "os.system"}})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"_target_": "torch.load"}, "directive keys"),
        ([1, {"_partial_": True}], "directive keys"),
        (math.inf, "not a finite number"),
        (b"bytes", "not a plain JSON value"),
    ],
)
def test_arguments_are_plain_json_values(value: object, message: str) -> None:
    with pytest.raises(RefrainInputError, match=message) as caught:
        canonical_spec({"class": "dit", "hidden_size": value})
    assert str(caught.value).startswith("model.hidden_size")


def test_a_wrong_value_type_is_one_line_not_a_traceback() -> None:
    with pytest.raises(RefrainInputError, match=r"^model: cannot build model 'dit' \("):
        build_model({"class": "dit", "config": {**SIZES, "num_heads": "four"}})


def test_adding_a_backbone_is_one_line(scratch_registry: None) -> None:
    register_model("plain_linear", "torch.nn:Linear")
    assert spec_class({"class": "plain_linear"}) == "plain_linear"
    assert spec_class({"_target_": "torch.nn.Linear"}) == "plain_linear"  # its Hydra target comes with it
    layer = build_model({"class": "plain_linear", "in_features": 3, "out_features": 2})
    assert tuple(layer.weight.shape) == (2, 3)
    with pytest.raises(RefrainInputError, match="is not an argument of model 'plain_linear'"):
        build_model({"class": "plain_linear", "in_features": 3, "out_features": 2, "bias_init": 1.0})
    with pytest.raises(ValueError, match="already registered"):
        register_model("plain_linear", "torch.nn:Conv1d")
    with pytest.raises(ValueError, match="module:attr"):
        register_model("bad", "torch.nn.Linear")


def test_an_upgrade_hook_maps_older_argument_shapes(
    scratch_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def upgrade(args: dict) -> dict:
        if "size" in args:  # an older bundle's single size -> today's two
            size = args.pop("size")
            args.update(in_features=size, out_features=size)
        return args

    register_model("square_linear", "torch.nn:Linear", upgrade=upgrade)
    assert canonical_spec({"class": "square_linear", "size": 4}) == {
        "class": "square_linear",
        "in_features": 4,
        "out_features": 4,
    }
    assert tuple(build_model({"class": "square_linear", "size": 4}).weight.shape) == (4, 4)
    upgrades = types.ModuleType("old_shapes")
    upgrades.square = upgrade  # type: ignore[attr-defined]
    register_model("lazy_square", "torch.nn:Linear", upgrade="old_shapes:square")  # imported on first use
    monkeypatch.setitem(sys.modules, "old_shapes", upgrades)
    assert canonical_spec({"class": "lazy_square", "size": 2})["out_features"] == 2
