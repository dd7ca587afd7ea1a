"""Sampler modes, a registry: each module here registers one mode (``register_mode``).

The pipeline (``Pipeline.run`` / ``pipe.<mode>(...)``), ``refrain-infer``'s sub-commands and sidecar
regeneration all read the registry; ``refrain.lora.sampling`` registers the LoRA modes (stem, accompany)
the same way. A new mode is one module (imported below) plus its test.
"""

from __future__ import annotations

from refrain.sampling.modes import audio2audio, edit, extend, repaint, retake, text2music  # noqa: F401
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
