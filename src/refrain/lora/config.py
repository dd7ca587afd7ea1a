"""LoRA JSON files: ACE-Step's schema (any ``peft.LoraConfig`` field) plus refrain's own sections.

ACE-Step's own files (``{"r": 256, "lora_alpha": 32, "target_modules": [...], "use_rslora": true}``) load
unchanged and give the plain ``text2music`` variant. refrain adds four optional keys: ``variant`` (see
``refrain.lora.variants``), ``description``, ``data`` (record selection) and ``conditioning`` (null
lyrics, the reference path of StemGen / singing2accompaniment). Every problem is one RefrainInputError
line naming the file and the key, with the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from peft import LoraConfig

from refrain import fileio
from refrain.errors import RefrainInputError
from refrain.lora.variants import ROLE_FAMILIES, VARIANTS, ControlSpec, DataSelection, Variant

REFRAIN_KEYS = ("variant", "description", "data", "conditioning")
CONTROL_KEYS = {
    "instruments": "instruments",
    "target": "target",
    "reference": "reference",
    "control_width": "width",
    "control_layers": "layers",
    "control_kernel_size": "kernel_size",
    "drop_reference_prob": "drop_reference_prob",
}
CONDITIONING_KEYS = ("null_lyrics", *CONTROL_KEYS)
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
SPEC_FILE = "refrain_lora.json"
LORA_FIELDS = tuple(sorted(f.name for f in fields(LoraConfig) if f.init))


@dataclass(frozen=True)
class LoraSpec:
    """A parsed LoRA JSON: the PEFT options and refrain's variant, data selection and conditioning."""

    variant: str
    peft: dict[str, Any]
    data: DataSelection
    null_lyrics: bool
    control: ControlSpec | None
    description: str = ""
    source: str = "<lora config>"

    def lora_config(self, extra_modules_to_save: tuple[str, ...] = ()) -> LoraConfig:
        """The ``peft.LoraConfig`` (plus modules refrain trains in full, e.g. the control path)."""
        options = dict(self.peft)
        options.setdefault("target_modules", list(DEFAULT_TARGETS))
        if extra_modules_to_save:
            options["modules_to_save"] = [*(options.get("modules_to_save") or []), *extra_modules_to_save]
        try:
            return LoraConfig(**options)
        except (TypeError, ValueError) as err:
            message = " ".join(str(err).split())
            raise RefrainInputError(
                self.source, f"peft.LoraConfig rejects it: {message}", "fix that field"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The same schema back (what an adapter folder stores as refrain_lora.json)."""
        out: dict[str, Any] = {"variant": self.variant, "description": self.description, **self.peft}
        out["data"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.data).items()
        }
        conditioning: dict[str, Any] = {"null_lyrics": self.null_lyrics}
        if self.control is not None:
            for key, attr in CONTROL_KEYS.items():
                value = getattr(self.control, attr)
                conditioning[key] = list(value) if isinstance(value, tuple) else value
        out["conditioning"] = conditioning
        return out


def _error(source: str, key: str, problem: str, fix: str) -> RefrainInputError:
    return RefrainInputError(f"{source}: {key}", problem, fix)


def _unknown(source: str, key: str, valid: tuple[str, ...] | list[str], where: str) -> RefrainInputError:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"valid keys: {', '.join(valid)}"
    return _error(source, key, f"unknown key in {where}", hint)


def _positive_number(source: str, key: str, value: Any, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise _error(
            source, key, f"{value!r} is not {kind}", f"set {key} to {kind} (e.g. {16 if integer else 32})"
        )


def _check_peft(source: str, peft: dict[str, Any]) -> None:
    """The rank/alpha/dropout checks PEFT only makes deep inside injection, as one-line errors."""
    if "r" in peft:
        _positive_number(source, "r", peft["r"], integer=True)
    if "lora_alpha" in peft:
        _positive_number(source, "lora_alpha", peft["lora_alpha"], integer=False)
    for key, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        for pattern, value in (peft.get(key) or {}).items():
            _positive_number(source, f"{key}.{pattern}", value, integer)
    dropout = peft.get("lora_dropout", 0.0)
    if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise _error(source, "lora_dropout", f"{dropout!r} is not in [0, 1)", "use e.g. 0.0 or 0.1")
    targets = peft.get("target_modules")
    if targets is not None:
        ok = isinstance(targets, str) or (
            isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
        )
        if not ok:
            raise _error(
                source,
                "target_modules",
                f"{targets!r} is neither a regex string nor a list of names",
                'list module names, e.g. ["to_q", "to_k", "to_v", "to_out.0"]',
            )


def _strings(source: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _error(source, key, f"{value!r} is not a list of strings", f'write e.g. "{key}": ["rap"]')
    return tuple(v.strip() for v in value)


def _parse_data(source: str, raw: Any, default: DataSelection) -> DataSelection:
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        raise _error(
            source, "data", f"{raw!r} is not an object", 'write e.g. "data": {"include_tags": ["rap"]}'
        )
    valid = [f.name for f in fields(DataSelection)]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in valid:
            raise _unknown(source, f"data.{key}", valid, "data")
        if key == "require_lyrics":
            if not isinstance(value, bool):
                raise _error(
                    source, "data.require_lyrics", f"{value!r} is not true/false", "use true or false"
                )
            values[key] = value
            continue
        values[key] = _strings(source, f"data.{key}", value or [])
    for role in values.get("roles", ()):
        family, _, name = role.partition(":")
        if family not in ROLE_FAMILIES or (family != "mix" and not name) or (family == "mix" and name):
            raise _error(
                source,
                "data.roles",
                f"{role!r} is not a multitrack role",
                "use mix, stem:<name> or rest:<name> (e.g. stem:vocals)",
            )
    return dataclasses.replace(default, **values)


def _parse_control(source: str, raw: Mapping[str, Any], variant: Variant) -> ControlSpec | None:
    given = {k: v for k, v in raw.items() if k in CONTROL_KEYS}
    if variant.control is None:
        if given:
            raise _error(
                source,
                f"conditioning.{next(iter(given))}",
                f"variant {variant.name} has no reference path",
                "use variant stemgen or singing2accompaniment, or drop the key",
            )
        return None
    values: dict[str, Any] = {}
    for key, value in given.items():
        attr, name = CONTROL_KEYS[key], f"conditioning.{key}"
        if attr == "instruments":
            values[attr] = _strings(source, name, value)
            if not values[attr] or len(set(values[attr])) != len(values[attr]):
                raise _error(
                    source, name, f"{value!r} is empty or repeats a name", "list distinct stem names"
                )
        elif attr in ("target", "reference"):
            if value not in ROLE_FAMILIES:
                raise _error(
                    source, name, f"{value!r} is not a role family", f"use one of {', '.join(ROLE_FAMILIES)}"
                )
            values[attr] = value
        elif attr == "drop_reference_prob":
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise _error(source, name, f"{value!r} is not a probability", "use a value in [0, 1]")
            values[attr] = float(value)
        else:
            _positive_number(source, name, value, integer=True)
            if attr == "kernel_size" and value % 2 == 0:
                raise _error(source, name, f"{value} is even", "use an odd kernel size such as 7")
            values[attr] = int(value)
    control = dataclasses.replace(variant.control, **values)
    if control.target == control.reference:
        raise _error(
            source,
            "conditioning.target",
            f"target and reference are both {control.target!r}",
            "generate one role from another, e.g. target stem with reference rest",
        )
    return control


def parse_lora_spec(raw: Mapping[str, Any], source: str = "<lora config>") -> LoraSpec:
    """Validate a decoded LoRA JSON object."""
    if not isinstance(raw, Mapping):
        raise RefrainInputError(source, "the LoRA config is not a JSON object", 'write {"r": 16, ...}')
    for key in raw:
        if key not in REFRAIN_KEYS and key not in LORA_FIELDS:
            close = difflib.get_close_matches(key, [*REFRAIN_KEYS, *LORA_FIELDS], n=3, cutoff=0.6)
            hint = (
                f"did you mean {', '.join(close)}?"
                if close
                else (
                    f"use {', '.join(REFRAIN_KEYS)} or a peft.LoraConfig field (r, lora_alpha, target_modules, ...)"
                )
            )
            raise _error(source, key, "unknown key in the LoRA config", hint)
    name = raw.get("variant") or "text2music"
    if name not in VARIANTS:
        raise _error(source, "variant", f"unknown variant {name!r}", f"use one of {', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    peft = {k: v for k, v in raw.items() if k in LORA_FIELDS}
    _check_peft(source, peft)
    conditioning = raw.get("conditioning") or {}
    if not isinstance(conditioning, Mapping):
        raise _error(source, "conditioning", f"{conditioning!r} is not an object", 'write "conditioning": {}')
    for key in conditioning:
        if key not in CONDITIONING_KEYS:
            raise _unknown(source, f"conditioning.{key}", list(CONDITIONING_KEYS), "conditioning")
    null_lyrics = conditioning.get("null_lyrics", variant.null_lyrics)
    if not isinstance(null_lyrics, bool):
        raise _error(
            source, "conditioning.null_lyrics", f"{null_lyrics!r} is not true/false", "use true or false"
        )
    spec = LoraSpec(
        variant=name,
        peft=peft,
        data=_parse_data(source, raw.get("data"), variant.data),
        null_lyrics=null_lyrics,
        control=_parse_control(source, conditioning, variant),
        description=str(raw.get("description") or ""),
        source=source,
    )
    spec.lora_config()  # PEFT's own consistency checks, as a one-line error
    return spec


def load_lora_spec(path: str | Path) -> LoraSpec:
    """Read and validate a LoRA JSON file (``--lora_config_path``)."""
    file = Path(path)
    if file.is_dir() and (file / SPEC_FILE).is_file():
        file = file / SPEC_FILE  # an adapter folder describes itself
    if not file.is_file():
        raise RefrainInputError(file, "LoRA config file does not exist", "pass a file from lora_configs/")
    raw = read_json(file)
    raw.pop("refrain_base", None)  # what an adapter folder's copy adds about its base
    return parse_lora_spec(raw, str(file))


def read_json(file: Path) -> dict[str, Any]:
    """A LoRA JSON's object, or a one-line error naming the line."""
    return fileio.read_json(file, 'fix the JSON: one object such as {"r": 16, ...}')
