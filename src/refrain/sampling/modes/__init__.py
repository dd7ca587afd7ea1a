"""Sampler modes, a registry: every other module of this package registers one mode (``register_mode``)
and is imported here, so a new mode is one file plus its test.

The pipeline (``Pipeline.run`` / ``pipe.<mode>(...)``), ``refrain-infer``'s sub-commands and sidecar
regeneration all read the registry; ``refrain.lora.sampling`` registers the LoRA modes (stem, accompany)
the same way when ``refrain.lora`` is imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from refrain.sampling.modes.base import (
    ModeCall,
    SamplerMode,
    SourceSong,
    get_mode,
    lyrics_flags,
    lyrics_from_flags,
    mode_names,
    prompt_and_lyrics,
    register_mode,
)

for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "ModeCall",
    "SamplerMode",
    "SourceSong",
    "get_mode",
    "lyrics_flags",
    "lyrics_from_flags",
    "mode_names",
    "prompt_and_lyrics",
    "register_mode",
]
