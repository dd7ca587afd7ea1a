"""An LRC folder: `x.wav` + `x.lrc` (timed lyrics), tags from `x_prompt.txt` or `x.txt` (or ``--tags_csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from refrain.data.sources import LyricsFormat, SourceLayout, register_source, sibling


def sidecars(audio: Path) -> tuple[Path | None, Path | None, LyricsFormat]:
    return sibling(audio, "_prompt.txt") or sibling(audio, ".txt"), sibling(audio, ".lrc"), "lrc"


def detect(names: Sequence[str]) -> bool:
    return any(name.lower().endswith(".lrc") for name in names)


LAYOUT = register_source(
    SourceLayout(
        "lrc",
        "x.wav + x.lrc, tags from x.txt/x_prompt.txt or --tags_csv",
        sidecars=sidecars,
        detect=detect,
        priority=20,
    )
)
