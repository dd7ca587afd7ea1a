"""What each tab of the app asks for, and how a form becomes a pipeline call (and a sidecar a form again).

A ``Form`` is the flat dict of one tab's widgets. ``call_of(form)`` gives the mode's name, its ``params``
and its ``SamplerOptions`` exactly as ``refrain-infer`` would pass them, so the app adds no sampling logic
of its own; ``form_of(sidecar)`` reads a sidecar back into the widgets of its tab.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import refrain.lora  # noqa: F401  (registers the stem and accompany modes)
from refrain.errors import RefrainInputError
from refrain.sampling.modes import get_mode
from refrain.sampling.options import SamplerOptions

# The app's tabs in ACE-Step's order, each with the mode it runs and the params it shows.
TABS: dict[str, tuple[str, ...]] = {
    "text2music": ("prompt", "lyrics", "duration"),
    "retake": ("variance",),
    "repaint": ("start", "end", "prompt", "lyrics", "variance"),
    "edit": ("source_prompt", "source_lyrics", "target_prompt", "target_lyrics", "preset"),
    "extend": ("left", "right", "prompt", "lyrics"),
    "audio2audio": ("strength", "prompt", "lyrics"),
    "stem": ("instrument", "prompt", "lyrics"),
    "accompany": ("prompt", "lyrics"),
}
SOURCE_MODES = tuple(mode for mode in TABS if get_mode(mode).source)  # tabs that take a source song
OPTION_FIELDS = ("steps", "guidance", "guidance_scale", "guidance_interval", "solver", "shift", "seed")
NUMBERS = {
    "duration",
    "variance",
    "start",
    "end",
    "left",
    "right",
    "strength",
    "guidance_scale",
    "guidance_interval",
    "shift",
}
INTEGERS = {"steps", "seed"}


def _typed(name: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    try:
        if name in INTEGERS:
            return int(float(value))
        if name in NUMBERS:
            return float(value)
    except (TypeError, ValueError):
        raise RefrainInputError(name, f"{value!r} is not a number", f"enter a number for {name}") from None
    return value


def options_of(form: Mapping[str, Any]) -> SamplerOptions:
    """The sampler options a form sets (others keep their defaults); a bad value is a one-line error."""
    known = {f.name for f in fields(SamplerOptions)}
    values = {
        k: _typed(k, form.get(k)) for k in OPTION_FIELDS if k in known and form.get(k) not in (None, "")
    }
    try:
        return SamplerOptions(**values)
    except (TypeError, ValueError) as error:
        raise RefrainInputError("sampler options", str(error), "fix the value in the form") from None


def call_of(mode: str, form: Mapping[str, Any]) -> tuple[dict[str, Any], SamplerOptions]:
    """``(params, options)`` for ``pipe.run(mode, **params, options=options)`` from a tab's form."""
    if mode not in TABS:
        raise RefrainInputError("mode", f"unknown tab {mode!r}", f"use one of {', '.join(TABS)}")
    params = {name: _typed(name, form.get(name)) for name in TABS[mode]}
    params = {k: v for k, v in params.items() if v is not None}
    if mode == "text2music" and not (params.get("prompt") or params.get("lyrics")):
        raise RefrainInputError(
            "prompt", "the prompt and the lyrics are both empty", "describe the song or give lyrics"
        )
    if mode == "retake":
        params.setdefault("variance", 0.5)
        params["seed"] = _typed("seed", form.get("seed"))
        return params, options_of(form)
    return params, options_of(form)


def form_of(sidecar: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The tab and the widget values that remake a sidecar's song (its params and options)."""
    mode = str(sidecar.get("mode", ""))
    if mode not in TABS:
        raise RefrainInputError(
            "sidecar", f"its mode {mode!r} has no tab here", "load a sidecar this app can remake"
        )
    params = dict(sidecar.get("params") or {})
    options = dict(sidecar.get("options") or {})
    form = {k: v for k, v in params.items() if k in TABS[mode]}
    form.update({k: options[k] for k in OPTION_FIELDS if k in options})
    return mode, form
