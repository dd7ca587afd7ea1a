"""Find the songs in an input folder and where their tags and lyrics live.

Source layouts are a registry (``SourceLayout``, ``register_source``): every module of
``refrain.data.layouts`` registers one, e.g. ACE-Step's (`x.mp3` + `x_prompt.txt` + `x_lyrics.txt`), an LRC
folder (`x.wav` + `x.lrc`) and the corpus embedded in the `immich-memories-music` package; ``--source``'s
choices and ``auto`` detection read it. Scanning only looks at names and small text files; decoding happens
later, and only for files that changed.
"""

from __future__ import annotations

import csv
import importlib
import json
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from refrain.data.audio_files import AUDIO_EXTENSIONS as AUDIO_EXTENSIONS  # re-exported
from refrain.data.audio_files import find_audio, path_text, unique_keys
from refrain.data.issues import Issue
from refrain.errors import RefrainInputError
from refrain.text.scripts import LANGUAGES

LyricsFormat = Literal["lrc", "structured"]
Sidecars = Callable[[Path], tuple[Path | None, Path | None, LyricsFormat]]
"""A folder layout's rule: audio file -> (tags file, lyrics file, lyrics format)."""


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


@dataclass(frozen=True)
class SourceLayout:
    """One input layout ``refrain-prepare --source NAME`` reads.

    A folder layout gives ``sidecars`` (where an audio file's tags and lyrics live) and, to take part in
    ``--source auto``, ``detect`` (the folder's file names -> whether they look like this layout; layouts
    are tried by ascending ``priority``, and the ``fallback`` one is used when none matches). A fixed corpus
    gives ``scan`` instead and needs no ``--input``.
    """

    name: str
    summary: str
    sidecars: Sidecars | None = None
    scan: Callable[[], list[SourceItem]] | None = None
    detect: Callable[[Sequence[str]], bool] | None = None
    priority: int = 100
    fallback: bool = False


_LAYOUTS: dict[str, SourceLayout] = {}


def register_source(layout: SourceLayout) -> SourceLayout:
    if (layout.sidecars is None) == (layout.scan is None):
        raise ValueError(f"source layout {layout.name!r} needs exactly one of sidecars (a folder) or scan")
    existing = _LAYOUTS.get(layout.name)
    if existing is not None and existing != layout:
        raise ValueError(f"source layout {layout.name!r} is registered twice")
    _LAYOUTS[layout.name] = layout
    return layout


def source_layouts() -> dict[str, SourceLayout]:
    """Every registered layout (the modules of ``refrain.data.layouts`` register themselves on first use)."""
    import refrain.data.layouts as package

    for module in sorted(info.name for info in pkgutil.iter_modules(package.__path__)):
        importlib.import_module(f"{package.__name__}.{module}")
    return dict(_LAYOUTS)


def source_names() -> tuple[str, ...]:
    """``--source`` choices: auto, then every registered layout."""
    return ("auto", *source_layouts())


def _layout(source: str) -> SourceLayout:
    layouts = source_layouts()
    if source not in layouts:
        raise RefrainInputError(
            source, f"unknown source, expected one of {', '.join(source_names())}", "pick one"
        )
    return layouts[source]


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


def sibling(audio: Path, suffix: str) -> Path | None:
    """``audio``'s stem + ``suffix`` beside it, when that file exists."""
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
    source: str,
    tags_csv: Path | None = None,
    exclude: Path | None = None,
) -> list[SourceItem]:
    """Items of a folder in layout ``source``. Missing sidecars are not errors: processing notes them."""
    sidecars = _layout(source).sidecars
    if sidecars is None:
        raise RefrainInputError(f"--source {source}", "is not a folder layout", "leave out --input")
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
        tags_file, lyrics_file, fmt = sidecars(audio)
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


def detect_source(folder: Path) -> str:
    """The first layout (by priority) whose ``detect`` accepts the folder's file names, else the fallback
    (ACE-Step sidecars win over `.lrc` files; plain audio reads as ACE-Step)."""
    if not folder.is_dir():
        raise RefrainInputError(
            folder, "the input folder does not exist", "pass an existing folder to --input"
        )
    names = [p.name for p in folder.rglob("*") if p.is_file()]
    layouts = sorted(source_layouts().values(), key=lambda layout: layout.priority)
    for layout in layouts:
        if layout.detect is not None and layout.detect(names):
            return layout.name
    return next(layout.name for layout in layouts if layout.fallback)


def scan_source(
    source: str,
    input_dir: Path | None,
    tags_csv: Path | None = None,
    exclude: Path | None = None,
) -> tuple[str, list[SourceItem]]:
    """Resolve `source` (auto detects) and list its items; returns the resolved source name too."""
    layout = None if source == "auto" else _layout(source)
    if layout is not None and layout.scan is not None:
        return source, layout.scan()
    if input_dir is None:
        raise RefrainInputError(
            f"--source {source}", "needs --input", "pass --input DIR, or use --source embedded"
        )
    resolved = detect_source(input_dir) if layout is None else source
    return resolved, scan_folder(input_dir, resolved, tags_csv=tags_csv, exclude=exclude)
