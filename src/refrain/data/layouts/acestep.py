"""ACE-Step's layout: `x.mp3` + `x_prompt.txt` (comma-separated tags) + `x_lyrics.txt` (structured lyrics)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from refrain.data.sources import LyricsFormat, SourceLayout, register_source, sibling


def sidecars(audio: Path) -> tuple[Path | None, Path | None, LyricsFormat]:
    return sibling(audio, "_prompt.txt"), sibling(audio, "_lyrics.txt"), "structured"


def detect(names: Sequence[str]) -> bool:
    return any(name.endswith(("_prompt.txt", "_lyrics.txt")) for name in names)


LAYOUT = register_source(
    SourceLayout(
        "acestep",
        "x.mp3 + x_prompt.txt + x_lyrics.txt",
        sidecars=sidecars,
        detect=detect,
        priority=10,
        fallback=True,
    )
)
