"""The model constructors a bundle or a stored training config may name: a fixed table, not import paths.

A bundle (and a checkpoint's resolved config) is data a user may have downloaded. Its model spec names a
constructor by a registry name, ``{"class": "dit", "hidden_size": 64, ...}``; loading looks the name up
here, checks that every argument is a plain JSON value the constructor declares, and calls it. Nothing a
file names is imported or called unless a line in this module registered it, so a manifest cannot reach
``hydra.utils.instantiate``, ``torch.load`` or any other callable.

Adding a backbone is one line in the table at the bottom::

    register_model("ace_step_15", "refrain.models.acestep.model:ACEStep15")

The Hydra target of a registered constructor (``refrain.models.acestep.model.ACEStep15``) is accepted
from older bundles and training configs, by exact string only, and rewritten to the registry name.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from refrain.errors import RefrainInputError
from refrain.models.dit.config import upgrade_dit_args

SPEC_KEY = "class"  # a Python keyword, so it can never clash with a constructor argument
_LEGACY_META_KEYS = ("_convert_", "_recursive_")  # Hydra options that change nothing for plain arguments
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
REEXPORT = "re-export the bundle with this refrain (refrain-export), or upgrade refrain"


@dataclass(frozen=True)
class ModelEntry:
    """One registered constructor: its registry name, where it lives, and which arguments are model specs."""

    name: str
    path: str  # "package.module:attribute", imported on first use (no import cycles, no start-up cost)
    nested: tuple[str, ...] = ()
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | str | None = None  # older shapes -> current

    @property
    def hydra_target(self) -> str:
        return self.path.replace(":", ".")

    def factory(self) -> Callable[..., nn.Module]:
        return _resolve(self.path)

    def upgraded(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.upgrade is None:
            return arguments
        upgrade = _resolve(self.upgrade) if isinstance(self.upgrade, str) else self.upgrade
        return upgrade(arguments)


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


_ENTRIES: dict[str, ModelEntry] = {}
_BY_TARGET: dict[str, str] = {}


def register_model(
    name: str,
    path: str,
    *,
    nested: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | str | None = None,
) -> None:
    """Allow bundles to name ``path`` (``"module:attr"``) as ``name``.

    ``nested``: arguments that are themselves model specs (built through this registry again);
    ``aliases``: further exact Hydra targets that mean this constructor (renamed modules);
    ``upgrade``: maps the plain arguments of older bundles to the constructor's current ones (a callable
    or a lazy ``"module:attr"``; it sees only checked JSON values and must return such values; it runs
    on every spec, so make it idempotent).
    """
    if (
        not _NAME.match(name)
        or not _PATH.match(path)
        or (isinstance(upgrade, str) and not _PATH.match(upgrade))
    ):
        raise ValueError(f"register_model({name!r}, {path!r}): name is [a-z0-9_], path is 'module:attr'")
    if name in _ENTRIES and _ENTRIES[name].path != path:
        raise ValueError(f"model name {name!r} is already registered for {_ENTRIES[name].path}")
    entry = ModelEntry(name, path, tuple(nested), upgrade)
    _ENTRIES[name] = entry
    for target in (entry.hydra_target, *aliases):
        _BY_TARGET[target] = name


def registered_models() -> dict[str, str]:
    """Registry name -> ``module:attr``, for messages and docs."""
    return {name: entry.path for name, entry in sorted(_ENTRIES.items())}


def spec_class(spec: Mapping[str, Any], where: str = "model") -> str:
    """The registry name a spec means: its ``class``, or the exact Hydra ``_target_`` of a registered model."""
    if not isinstance(spec, Mapping):
        raise RefrainInputError(where, f"is a {type(spec).__name__}, not a model spec object", REEXPORT)
    known = ", ".join(sorted(_ENTRIES))
    if SPEC_KEY in spec:
        name = spec[SPEC_KEY]
        if not isinstance(name, str) or name not in _ENTRIES:
            raise RefrainInputError(
                f"{where}.{SPEC_KEY}", f"{name!r} is not a registered model (known: {known})", REEXPORT
            )
        return name
    if "_target_" in spec:
        target = spec["_target_"]
        if not isinstance(target, str) or target not in _BY_TARGET:
            raise RefrainInputError(
                f"{where}._target_",
                f"{target!r} is not a model refrain builds from a file (known: {known})",
                REEXPORT,
            )
        return _BY_TARGET[target]
    raise RefrainInputError(where, f"names no model class (no {SPEC_KEY!r} key)", REEXPORT)


def _check_plain(value: Any, where: str) -> None:
    """JSON values only: no objects, callables or Hydra directives anywhere inside an argument."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RefrainInputError(where, f"{value} is not a finite number", REEXPORT)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("_"):
                raise RefrainInputError(
                    f"{where}.{key}",
                    "directive keys (starting with '_') are not allowed in a model spec",
                    REEXPORT,
                )
            _check_plain(item, f"{where}.{key}")
        return
    raise RefrainInputError(where, f"a {type(value).__name__} is not a plain JSON value", REEXPORT)


def canonical_spec(spec: Mapping[str, Any], where: str = "model") -> dict[str, Any]:
    """``{"class": name, **arguments}`` with every argument checked; nested model specs canonical too."""
    name = spec_class(spec, where)
    entry = _ENTRIES[name]
    legacy = SPEC_KEY not in spec
    arguments: dict[str, Any] = {}
    for key, value in spec.items():
        if key == SPEC_KEY or (legacy and key in ("_target_", *_LEGACY_META_KEYS)):
            continue
        if not isinstance(key, str) or key.startswith("_"):
            raise RefrainInputError(
                f"{where}.{key}",
                "directive keys (starting with '_') are not allowed in a model spec",
                REEXPORT,
            )
        if key in entry.nested and value is not None:
            value = canonical_spec(value, f"{where}.{key}")
        _check_plain(value, f"{where}.{key}")
        arguments[key] = value
    if entry.upgrade is not None:
        arguments = entry.upgraded(dict(arguments))
        _check_plain(arguments, where)
    _check_arguments(entry, arguments, where)
    return {SPEC_KEY: name, **arguments}


def _check_arguments(entry: ModelEntry, arguments: Mapping[str, Any], where: str) -> None:
    try:
        parameters = inspect.signature(entry.factory()).parameters
    except (ImportError, AttributeError) as error:
        raise RefrainInputError(
            where, f"model {entry.name!r} cannot be imported ({error})", "reinstall refrain"
        ) from None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(arguments) - set(parameters))
    if unknown:
        raise RefrainInputError(
            f"{where}.{unknown[0]}", f"is not an argument of model {entry.name!r}", REEXPORT
        )


def build_model(spec: Mapping[str, Any], where: str = "model", **overrides: Any) -> nn.Module:
    """Construct the registered model a spec names, with its checked arguments (``overrides`` win when declared)."""
    canonical = canonical_spec(spec, where)
    entry = _ENTRIES[canonical.pop(SPEC_KEY)]
    factory = entry.factory()
    declared = inspect.signature(factory).parameters
    canonical.update({k: v for k, v in overrides.items() if k in declared})
    try:
        return factory(**canonical)
    except (TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RefrainInputError(where, f"cannot build model {entry.name!r} ({first})", REEXPORT) from None


# ----- the constructors bundles may name: one line per backbone -----
register_model("dit", "refrain.models.dit.transformer:DiffusionTransformer", upgrade=upgrade_dit_args)
register_model("lora_adapted_dit", "refrain.lora.model:build_adapted_dit", nested=("base",))
register_model("ace15", "refrain.models.backbones.ace15:build_ace15")
register_model(  # a run's model/dit=diffrhythm_1b (load_diffrhythm) exports as the class; the bundle has the weights
    "diffrhythm",
    "refrain.models.backbones.diffrhythm:DiffRhythm",
    aliases=("refrain.models.backbones.diffrhythm_load.load_diffrhythm",),
    upgrade=lambda args: {k: v for k, v in args.items() if k not in ("checkpoint", "use_ema", "dtype")},
)
register_model(  # model/dit=stable_audio_open (load_stable_audio) exports as build_stable_audio + the folder's configs
    "stable_audio_open",
    "refrain.models.backbones.stable_audio:build_stable_audio",
    aliases=("refrain.models.backbones.stable_audio.load_stable_audio",),
    upgrade="refrain.models.backbones.stable_audio:spec_from_loader_args",
)
