"""Adapter folders on disk, and adapters on a base DiT at inference: load several, scale, switch off, merge.

An adapter folder is PEFT's standard one (``adapter_config.json`` + ``adapter_model.safetensors``, loadable
with ``peft.PeftModel.from_pretrained``) plus ``refrain_lora.json``: the LoRA JSON it was trained with
(variant, data selection, conditioning) and facts about the base, so the sampler knows the variant's
mode and the instrument labels. A variant with a reference path keeps that path in the same safetensors
file (a PEFT ``modules_to_save`` entry); ``attach_control`` must run on the base before PEFT loads it,
which ``load_adapters`` does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import PeftModel
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from torch import nn

from refrain.errors import RefrainInputError
from refrain.fileio import atomic_folder
from refrain.lora.config import SPEC_FILE, LoraSpec, parse_lora_spec, read_json
from refrain.lora.control import CONTROL_MODULE, attach_control, control_modules

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_KEY = "refrain_base"
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)\.weight$")


def save_adapter(
    model: PeftModel, folder: str | Path, spec: LoraSpec, base: Mapping[str, Any] | None = None
) -> Path:
    """Write the active (``default``) adapter of ``model`` as a PEFT folder + refrain_lora.json, atomically."""
    target = Path(folder)
    with atomic_folder(target) as staging:
        model.save_pretrained(str(staging), selected_adapters=["default"])
        described = {**spec.to_dict(), BASE_KEY: dict(base or {})}
        (staging / SPEC_FILE).write_text(json.dumps(described, indent=2, sort_keys=False))
        for file in staging.iterdir():
            os.chmod(file, 0o644)
    return target


def read_adapter_spec(folder: str | Path) -> LoraSpec:
    """The adapter's LoRA spec; a foreign PEFT folder (no refrain_lora.json) reads as plain text2music."""
    root = Path(folder)
    if not (root / ADAPTER_CONFIG).is_file() or not (root / ADAPTER_WEIGHTS).is_file():
        raise RefrainInputError(
            root,
            f"not a PEFT adapter folder ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS} expected)",
            "pass a folder written by a LoRA run (exps/<name>/adapter or adapters/step_*)",
        )
    if (root / SPEC_FILE).is_file():
        raw = read_json(root / SPEC_FILE)
        raw.pop(BASE_KEY, None)
        return parse_lora_spec(raw, str(root / SPEC_FILE))
    return parse_lora_spec({}, str(root))


def read_adapter_base(folder: str | Path) -> dict[str, Any]:
    """What the training run recorded about its base (bundle path, shape facts); {} when unknown."""
    file = Path(folder) / SPEC_FILE
    return dict(read_json(file).get(BASE_KEY) or {}) if file.is_file() else {}


def check_adapter_base(folder: str | Path, base_hash: str, allow_other_base: bool = False) -> None:
    """An adapter learned deltas against one set of base weights; on another base (same shapes, other
    weights) it loads without a complaint and samples something else. Refused unless explicitly allowed."""
    recorded = str(read_adapter_base(folder).get("bundle_hash") or "")
    if not recorded or not base_hash or recorded == base_hash or allow_other_base:
        return
    trained_on = read_adapter_base(folder).get("bundle") or "see refrain_lora.json"
    raise RefrainInputError(
        Path(folder),
        f"was trained on base bundle {recorded[:12]}, but this base is {base_hash[:12]}",
        f"use the base it was trained on ({trained_on}), or pass --allow_other_base to apply it anyway",
    )


def _tensor_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(file), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 - safe_open is not iterable


def check_adapter_fits(base: nn.Module, folder: str | Path) -> None:
    """One-line error when the adapter was trained on a base of another shape (or another architecture)."""
    root = Path(folder)
    shapes = _tensor_shapes(root / ADAPTER_WEIGHTS)
    linears = {n: m for n, m in base.named_modules() if isinstance(m, nn.Linear)}
    for key, shape in sorted(shapes.items()):
        name = key.removeprefix(_PREFIX)
        match = _LORA_KEY.match(name)
        if match is not None:
            module = linears.get(match["module"])
            if module is None:
                raise RefrainInputError(
                    root / ADAPTER_WEIGHTS,
                    f"adapts {match['module']!r}, which the base DiT does not have",
                    f"apply it to the base it was trained on; this base has e.g. {', '.join(list(linears)[:6])}",
                )
            expected = (
                (shape[0], module.in_features) if match["part"] == "A" else (module.out_features, shape[1])
            )
            if shape != expected:
                raise RefrainInputError(
                    root / ADAPTER_WEIGHTS,
                    f"{match['module']} is {module.in_features}->{module.out_features} in this base but the "
                    f"adapter's lora_{match['part']} is {list(shape)} (a base of another size)",
                    "apply the adapter to the base bundle it was trained from (see refrain_lora.json)",
                )
        elif f".{CONTROL_MODULE}." in f".{name}":
            _check_control_shape(root, name, shape, base)


def _check_control_shape(root: Path, name: str, shape: tuple[int, ...], base: nn.Module) -> None:
    leaf = name.split(f"{CONTROL_MODULE}.", 1)[1]
    wanted = {
        "proj_in.weight": (1, int(base.latent_channels) + 1),
        "frame_out.weight": (0, int(base.hidden_size)),
        "vector_out.weight": (0, int(base.hidden_size)),
    }
    if leaf in wanted:
        axis, size = wanted[leaf]
        if shape[axis] != size:
            raise RefrainInputError(
                root / ADAPTER_WEIGHTS,
                f"its reference path {leaf} is {list(shape)}, which does not fit this "
                f"base (latent channels {base.latent_channels}, hidden size {base.hidden_size})",
                "apply the adapter to the base bundle it was trained from",
            )


@dataclass
class AdapterRef:
    """One adapter to load: its folder, a scale and an optional name (default: the folder's name)."""

    path: Path
    scale: float = 1.0
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        """``PATH`` or ``PATH:SCALE`` (the sampler's --lora argument)."""
        path, sep, scale = text.rpartition(":")
        if sep and path and not Path(text).exists():
            try:
                return cls(Path(path), float(scale))
            except ValueError:
                pass
        return cls(Path(text))


@dataclass
class LoadedAdapters:
    """A PeftModel over the base with every adapter active, their names and specs (same order)."""

    model: PeftModel
    names: list[str]
    specs: list[LoraSpec]
    scales: dict[str, float]

    @property
    def control_spec(self) -> LoraSpec | None:
        return next((s for s in self.specs if s.control is not None), None)

    @property
    def null_lyrics(self) -> bool:
        """Whether an adapter that is on (scale != 0) was trained without lyrics: scale 0 is fully off."""
        return any(
            s.null_lyrics and self.scales.get(n, 1.0) != 0
            for s, n in zip(self.specs, self.names, strict=True)
        )


def _unique_names(refs: Sequence[AdapterRef]) -> list[str]:
    names: list[str] = []
    for index, ref in enumerate(refs):
        base = re.sub(r"[^A-Za-z0-9_]", "_", ref.name or ref.path.name) or f"adapter{index}"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def load_adapters(
    base: nn.Module, refs: Sequence[AdapterRef], base_hash: str = "", allow_other_base: bool = False
) -> LoadedAdapters:
    """Load every adapter onto ``base`` (in place), all active at their scales, in eval mode.

    ``base_hash`` is the bundle hash of ``base``; an adapter recording another one is refused (see
    ``check_adapter_base``)."""
    if not refs:
        raise RefrainInputError("--lora", "no adapter given", "pass an adapter folder, optionally PATH:SCALE")
    specs = [read_adapter_spec(ref.path) for ref in refs]
    for ref in refs:
        check_adapter_base(ref.path, base_hash, allow_other_base)
    controlled = [(ref, spec) for ref, spec in zip(refs, specs, strict=True) if spec.control is not None]
    if len(controlled) > 1:
        raise RefrainInputError(
            ", ".join(str(ref.path) for ref, _ in controlled),
            "more than one adapter with a reference path",
            "combine at most one StemGen/singing2accompaniment adapter with plain ones",
        )
    native = getattr(getattr(base, "backbone_spec", None), "native_reference", False)
    if controlled and not native:  # a backbone that reads a reference track itself has no control path
        assert controlled[0][1].control is not None
        attach_control(base, controlled[0][1].control)
    for ref in refs:
        check_adapter_fits(base, ref.path)
    names = _unique_names(refs)
    model = PeftModel.from_pretrained(base, str(refs[0].path), adapter_name=names[0])
    for ref, name in zip(refs[1:], names[1:], strict=True):
        model.load_adapter(str(ref.path), adapter_name=name)
    model.base_model.set_adapter(names)
    model.requires_grad_(False)
    model.eval()
    scales = {name: float(ref.scale) for ref, name in zip(refs, names, strict=True)}
    set_adapter_scales(model, scales)
    return LoadedAdapters(model, names, specs, scales)


def set_adapter_scales(model: nn.Module, scales: Mapping[str, float]) -> None:
    """Scale each adapter's contribution (LoRA deltas and reference path alike); 0 switches one off."""
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, scale in scales.items():
                module.set_scale(name, float(scale))
        copies = getattr(module, "modules_to_save", None)
        if isinstance(copies, nn.ModuleDict):
            for name, scale in scales.items():
                if name in copies:
                    for control in control_modules(copies[name]):
                        control.scale = float(scale)


@contextmanager
def adapters_off(model: PeftModel) -> Iterator[nn.Module]:
    """The base model's behaviour, exactly, without unloading anything."""
    with model.disable_adapter():
        yield model


def merge_adapters(loaded: LoadedAdapters) -> nn.Module:
    """Fold every active adapter (at its scale) into the base weights; returns the plain base module.

    A reference path stays a module of the merged model (it has no base weight to fold into), with its
    scale baked into its output layers.
    """
    model = loaded.model
    for control in control_modules(model):
        control.fold_scale()
    return model.merge_and_unload(adapter_names=list(loaded.names))
