"""Find the songs in an input folder and where their tags and lyrics live.

Three layouts are understood: ACE-Step's (`x.mp3` + `x_prompt.txt` + `x_lyrics.txt`), an LRC folder
(`x.wav` + `x.lrc`, tags from `x.txt`/`x_prompt.txt` or a CSV) and the corpus embedded in the
`immich-memories-music` package (tags from its LICENSE-MUSIC table). Scanning only looks at names and
small text files; decoding happens later, and only for files that changed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from refrain.data.audio_files import AUDIO_EXTENSIONS as AUDIO_EXTENSIONS  # re-exported
from refrain.data.audio_files import find_audio, path_text, unique_keys
from refrain.data.embedded import embedded_tags, embedded_tracks_dir
from refrain.data.issues import Issue
from refrain.errors import RefrainInputError
from refrain.text.scripts import LANGUAGES

SOURCES = ("auto", "acestep", "lrc", "embedded")
LyricsFormat = Literal["lrc", "structured"]


@dataclass(frozen=True)
class SourceItem:
    """One song: its audio, the sidecar files that describe it and metadata that lives elsewhere.

    `tags_file`/`lyrics_file` are read at processing time; `inline_tags`/`language` come from a CSV
    row or the embedded licence table and are part of the item's fingerprint through `meta`.
    `problem` is a skip the scan already found (a folder named like audio, a link loop, a name that
    is not UTF-8, a second format of the same song): such an item is reported and never opened.
    """

    key: str
    audio: Path
    tags_file: Path | None = None
    lyrics_file: Path | None = None
    lyrics_format: LyricsFormat | None = None
    inline_tags: tuple[str, ...] | None = None
    language: str | None = None
    problem: Issue | None = None

    @property
    def display(self) -> str:
        """The audio path as printable text (for reports: undecodable bytes as \\xNN escapes)."""
        return path_text(self.audio)

    @property
    def sidecars(self) -> tuple[Path, ...]:
        """Files whose bytes belong to this song besides the audio (hashed and watched for changes)."""
        return tuple(p for p in (self.tags_file, self.lyrics_file) if p is not None)

    @property
    def meta(self) -> str:
        """Metadata not stored in a sidecar file, as a stable string (hashed and compared on re-runs)."""
        tags = list(self.inline_tags) if self.inline_tags is not None else None
        return json.dumps({"tags": tags, "language": self.language}, ensure_ascii=False, sort_keys=True)


def split_tags(text: str) -> list[str]:
    """ACE-Step prompt files are comma-separated tags; newlines separate tags too."""
    parts = text.replace("\n", ",").split(",")
    return [part.strip() for part in parts if part.strip()]


def read_text(path: Path) -> str:
    """Sidecar text as UTF-8 (a BOM is dropped, undecodable bytes replaced rather than fatal)."""
    return path.read_text(encoding="utf-8-sig", errors="replace")


def list_audio(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Usable audio files under `folder` (recursively, sorted, hidden folders and `exclude` left out)."""
    return [found.path for found in find_audio(folder, exclude) if found.problem is None]


def _sibling(audio: Path, suffix: str) -> Path | None:
    candidate = audio.with_name(audio.stem + suffix)
    return candidate if candidate.is_file() else None


def load_tags_csv(path: Path) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """CSV rows `filename,tags[,language]` -> {filename: (tags, language)}; a header row is optional."""
    if not path.is_file():
        raise RefrainInputError(path, "the tags CSV does not exist", "pass an existing file to --tags_csv")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["filename", "tags"]:
        rows = rows[1:]
    table: dict[str, tuple[tuple[str, ...], str | None]] = {}
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise RefrainInputError(
                path,
                f"row {number} has {len(row)} column(s), expected filename,tags[,language]",
                "give every row a filename and a quoted, comma-separated tag list",
            )
        language = row[2].strip().lower() if len(row) > 2 and row[2].strip() else None
        if language == "auto":
            language = None
        if language is not None and language not in LANGUAGES:
            raise RefrainInputError(
                path,
                f"row {number} has the unknown language {row[2].strip()!r}",
                f"use one of {', '.join(LANGUAGES)} or auto (or leave it empty)",
            )
        table[row[0].strip()] = (tuple(split_tags(row[1])), language)
    return table


def _csv_row(table: dict, audio: Path, root: Path) -> tuple[tuple[str, ...], str | None] | None:
    """Match a CSV row by relative path, file name or stem, in that order."""
    for name in (audio.relative_to(root).as_posix(), audio.name, audio.stem):
        if name in table:
            return table[name]
    return None


def scan_folder(
    folder: Path,
    source: Literal["acestep", "lrc"],
    tags_csv: Path | None = None,
    exclude: Path | None = None,
) -> list[SourceItem]:
    """Items of an ACE-Step or LRC folder. Missing sidecars are not errors: processing notes them."""
    if not folder.is_dir():
        raise RefrainInputError(
            folder, "the input folder does not exist", "pass an existing folder to --input"
        )
    table = load_tags_csv(tags_csv) if tags_csv is not None else {}
    found = find_audio(folder, exclude=exclude)
    audio_files = [f.path for f in found if f.problem is None]
    keys = unique_keys(audio_files, folder)
    items = [
        SourceItem(key=path_text(f.path.relative_to(folder)), audio=f.path, problem=f.problem)
        for f in found
        if f.problem is not None
    ]
    for audio in audio_files:
        row = _csv_row(table, audio, folder)
        if source == "acestep":
            tags_file = _sibling(audio, "_prompt.txt")
            lyrics_file, fmt = _sibling(audio, "_lyrics.txt"), "structured"
        else:
            tags_file = _sibling(audio, "_prompt.txt") or _sibling(audio, ".txt")
            lyrics_file, fmt = _sibling(audio, ".lrc"), "lrc"
        items.append(
            SourceItem(
                key=keys[audio],
                audio=audio.resolve(),
                tags_file=tags_file.resolve() if tags_file is not None and row is None else None,
                lyrics_file=lyrics_file.resolve() if lyrics_file is not None else None,
                lyrics_format=fmt if lyrics_file is not None else None,
                inline_tags=row[0] if row is not None else None,
                language=row[1] if row is not None else None,
            )
        )
    return items


def scan_embedded() -> list[SourceItem]:
    """The 29 tracks shipped by immich-memories-music, tagged from its licence table, no lyrics."""
    root = embedded_tracks_dir()
    table = embedded_tags()
    audio_files = list_audio(root)
    keys = unique_keys(audio_files, root)
    items = []
    for audio in audio_files:
        mood = audio.parent.name
        tags = table.get(f"{mood}/{audio.name}", (mood,))
        items.append(SourceItem(key=keys[audio], audio=audio.resolve(), inline_tags=tuple(tags)))
    return items


def detect_source(folder: Path) -> Literal["acestep", "lrc"]:
    """ACE-Step sidecars win; otherwise `.lrc` files mean an LRC folder; plain audio reads as ACE-Step."""
    if not folder.is_dir():
        raise RefrainInputError(
            folder, "the input folder does not exist", "pass an existing folder to --input"
        )
    names = [p.name for p in folder.rglob("*") if p.is_file()]
    if any(name.endswith(("_prompt.txt", "_lyrics.txt")) for name in names):
        return "acestep"
    if any(name.lower().endswith(".lrc") for name in names):
        return "lrc"
    return "acestep"


def scan_source(
    source: str,
    input_dir: Path | None,
    tags_csv: Path | None = None,
    exclude: Path | None = None,
) -> tuple[str, list[SourceItem]]:
    """Resolve `source` (auto detects) and list its items; returns the resolved source name too."""
    if source not in SOURCES:
        raise RefrainInputError(source, f"unknown source, expected one of {', '.join(SOURCES)}", "pick one")
    if source == "embedded":
        return source, scan_embedded()
    if input_dir is None:
        raise RefrainInputError(
            f"--source {source}", "needs --input", "pass --input DIR, or use --source embedded"
        )
    resolved = detect_source(input_dir) if source == "auto" else source
    return resolved, scan_folder(input_dir, resolved, tags_csv=tags_csv, exclude=exclude)
