"""The music corpus shipped inside the `immich-memories-music` package, tagged from its licence table.

The package stores tracks as `tracks/<mood>/<name>.opus`; its LICENSE-MUSIC file lists, per mood
section, each track's tempo, key, seed and style, e.g.
`  calm_acoustic_1.opus   68 bpm  C major   seed 101  [acoustic]`. Mood + style + tempo + key become
the record's tags, the same kind of caption ACE-Step generated the tracks from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from refrain.errors import RefrainInputError

DISTRIBUTION = "immich-memories-music"
PACKAGE = "immich_memories_music"
LICENCE_NAME = "LICENSE-MUSIC"

_SECTION = re.compile(r"^(?P<mood>[A-Za-z0-9_-]+)/\s*$")
_TRACK = re.compile(
    r"^\s+(?P<name>\S+\.(?:opus|mp3|wav|flac|ogg))\s+(?P<bpm>\d+(?:\.\d+)?)\s*bpm\s+"
    r"(?P<key>[A-G][#b]?\s+(?:major|minor))\s+seed\s+\d+\s+\[(?P<style>[^\]]+)\]\s*$"
)


def _missing(problem: str) -> RefrainInputError:
    return RefrainInputError(
        DISTRIBUTION, problem, f"reinstall it: pip install --force-reinstall {DISTRIBUTION}"
    )


def embedded_tracks_dir() -> Path:
    """Folder holding `<mood>/<name>.opus` inside the installed package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _missing("the package is not installed")
    tracks = Path(next(iter(spec.submodule_search_locations))) / "tracks"
    if not tracks.is_dir():
        raise _missing(f"the package has no tracks folder at {tracks}")
    return tracks


def licence_text() -> str:
    """LICENSE-MUSIC from the package's dist-info (read through importlib.metadata, not a fixed path)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise _missing("the package is not installed") from err
    for file in dist.files or []:
        if file.name == LICENCE_NAME:
            return file.read_text(encoding="utf-8")
    raise _missing(f"its dist-info has no {LICENCE_NAME}")


def parse_licence_table(text: str) -> dict[str, tuple[str, ...]]:
    """`{"<mood>/<name>.opus": (mood, style, "<bpm> bpm", "<key>")}` for every track row in the table."""
    table: dict[str, tuple[str, ...]] = {}
    mood: str | None = None
    for line in text.splitlines():
        section = _SECTION.match(line)
        if section:
            mood = section["mood"]
            continue
        track = _TRACK.match(line)
        if track and mood is not None:
            bpm = track["bpm"].removesuffix(".0")
            key = " ".join(track["key"].split())
            table[f"{mood}/{track['name']}"] = (mood, track["style"].strip(), f"{bpm} bpm", key)
    return table


def embedded_tags() -> dict[str, tuple[str, ...]]:
    """The parsed licence table of the installed package."""
    return parse_licence_table(licence_text())
