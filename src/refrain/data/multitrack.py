"""Multitrack datasets: a folder per song with the mix and one file per stem, for the stem LoRA variants.

Input layout (names case-insensitive, any audio format refrain-prepare reads)::

    songs/
      my_song/
        mix.flac  vocals.flac  drums.flac  bass.flac  other.flac
        prompt.txt            comma-separated tags (tags.txt works too)
        lyrics.txt            structured or LRC lyrics (lyrics.lrc works too)

Every song becomes several records of one ordinary prepared dataset, each with a *role*: ``mix``, one
``stem:<name>`` per stem and one ``rest:<name>`` per stem, the song without that stem (the sum of the
other stems, or mix minus the stem when the others are missing). StemGen pairs ``stem:drums`` (target)
with ``rest:drums`` (reference); singing2accompaniment pairs ``rest:vocals`` with ``stem:vocals``.
Stems are linked, not copied; ``rest`` mixes are rendered once into ``audio_dir`` (FLAC, scaled down
only when the sum would clip, the gain recorded). Records are produced by ``refrain.data.prepare`` (so
validation, lyrics, phonemes, report and incremental re-runs are the usual ones) from a staging folder in
ACE-Step's layout; then whole songs are assigned to train or validation (no song leaks across splits),
and ``multitrack.json`` beside the dataset maps every song's roles to record keys. Whole songs are held
out for validation by the rule of ``refrain.data.splits`` (``--val_fraction`` of the songs, rounded, at
least one), inside the one preparation run, so its report and this module's summary give the same
numbers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict

from refrain.data.audio_files import find_audio
from refrain.data.lyric_fields import read_sidecar_text
from refrain.data.schema import SPLITS
from refrain.data.sources import split_tags
from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path, read_json

LAYOUT_FILE = "multitrack.json"
LAYOUT_VERSION = 1
DEFAULT_STEMS = ("vocals", "drums", "bass", "other")
MIX_NAMES = ("mix", "mixture")
TAG_FILES = ("prompt.txt", "tags.txt")
LYRIC_FILES = ("lyrics.lrc", "lyrics.txt")


@dataclass(frozen=True)
class SongFolder:
    """One song of a multitrack folder: its mix (optional), stems and sidecars."""

    name: str
    folder: Path
    mix: Path | None
    stems: dict[str, Path]
    tags_file: Path | None = None
    lyrics_file: Path | None = None


@dataclass
class MultitrackLayout:
    """Song -> role -> record key, as stored in ``multitrack.json`` next to the prepared dataset."""

    stems: tuple[str, ...]
    songs: dict[str, dict[str, str]] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    gains: dict[str, float] = field(default_factory=dict)

    def roles_by_key(self) -> dict[str, tuple[str, str]]:
        return {key: (song, role) for song, roles in self.songs.items() for role, key in roles.items()}

    def save(self, dataset_path: str | Path) -> Path:
        data = {
            "format_version": LAYOUT_VERSION,
            "stems": list(self.stems),
            "songs": self.songs,
            "splits": self.splits,
            "rest_gains": self.gains,
        }
        path = Path(dataset_path) / LAYOUT_FILE
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        return path


def read_layout(dataset_path: str | Path) -> MultitrackLayout | None:
    """The dataset's multitrack layout, or None for an ordinary (single-track) dataset."""
    path = Path(dataset_path) / LAYOUT_FILE
    if not path.is_file():
        return None
    data = read_json(path, "re-run multitrack preparation")
    try:
        return MultitrackLayout(
            tuple(data["stems"]),
            dict(data["songs"]),
            dict(data.get("splits") or {}),
            dict(data.get("rest_gains") or {}),
        )
    except (KeyError, TypeError) as err:
        raise RefrainInputError(
            path, f"unreadable multitrack layout ({err})", "re-run multitrack preparation"
        ) from None


def _audio_by_name(folder: Path, notes: list[str]) -> dict[str, Path]:
    """A song folder's audio files by lower-case stem; entries that cannot be used (a folder named
    ``drums.wav``, a link loop, ``vocals.mp3`` beside ``vocals.wav``) are named in `notes`, not dropped."""
    found: dict[str, Path] = {}
    for entry in find_audio(folder):
        if entry.path.parent != folder:
            continue  # a song's files sit directly in its folder
        if entry.problem is not None:
            notes.append(f"{folder.name}: {entry.path.name}: {entry.problem.code}: {entry.problem.message}")
            continue
        found.setdefault(entry.path.stem.lower(), entry.path)
    return found


def _first(folder: Path, names: Sequence[str]) -> Path | None:
    lower = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    return next((lower[n] for n in names if n in lower), None)


def scan_multitrack(
    input_dir: str | Path, stems: Sequence[str] = DEFAULT_STEMS
) -> tuple[list[SongFolder], list[str]]:
    """Song folders under ``input_dir`` and a note for each folder that is not one (no stem file)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise RefrainInputError(
            root, "the input folder does not exist", "pass the folder holding one folder per song"
        )
    songs, notes = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        audio = _audio_by_name(folder, notes)
        found = {name: audio[name] for name in stems if name in audio}
        if not found:
            notes.append(f"{folder.name}: no stem file ({', '.join(stems)}); skipped")
            continue
        mix = next((audio[n] for n in MIX_NAMES if n in audio), None)
        extra = sorted(set(audio) - set(found) - set(MIX_NAMES))
        if extra:
            notes.append(f"{folder.name}: ignored audio files {', '.join(extra)} (not in --stems)")
        songs.append(
            SongFolder(
                folder.name, folder, mix, found, _first(folder, TAG_FILES), _first(folder, LYRIC_FILES)
            )
        )
    if not songs:
        raise RefrainInputError(
            root,
            "no song folder with stem files found",
            f"lay out one folder per song holding mix.flac and stem files named {', '.join(stems)}",
        )
    return songs, notes


def role_has_vocals(role: str, stems: Sequence[str]) -> bool:
    """Whether a role's audio carries the singing (so its record gets the song's lyrics)."""
    if "vocals" not in stems:
        return role == "mix" or role.startswith("rest:")
    return role in ("mix", "stem:vocals") or (role.startswith("rest:") and role != "rest:vocals")


def role_tags(role: str) -> list[str]:
    """Tags a role adds to the song's: the stem's name, or what the rest mix lacks."""
    family, _, name = role.partition(":")
    if family == "stem":
        return [name]
    if family == "rest":
        return ["instrumental", "accompaniment"] if name == "vocals" else [f"no {name}"]
    return []


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        if target.resolve() == source.resolve():
            return
        target.unlink()
    try:
        target.symlink_to(source.resolve())
    except OSError:  # filesystems without symlinks get a copy
        shutil.copyfile(source, target)


def _render_rest(song: SongFolder, stem: str, target: Path) -> float | None:
    """Write the song without ``stem``; returns the gain applied (None when it cannot be made)."""
    from refrain.audio.io import audio_info, load_audio, save_audio

    others = [p for name, p in song.stems.items() if name != stem]
    if not others and song.mix is None:
        return None
    sources = [*others, song.stems[stem]] + ([song.mix] if song.mix is not None else [])
    if target.exists() and target.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        meta = target.with_suffix(".gain")
        return float(meta.read_text()) if meta.is_file() else 1.0
    rate = audio_info(song.stems[stem]).sample_rate
    if len(others) == len(song.stems) - 1 and others:
        parts = [(load_audio(p, sample_rate=rate).samples, 1.0) for p in others]
    else:  # stems are missing: the mix minus this stem
        assert song.mix is not None
        parts = [
            (load_audio(song.mix, sample_rate=rate).samples, 1.0),
            (load_audio(song.stems[stem], sample_rate=rate).samples, -1.0),
        ]
    frames = max(a.shape[1] for a, _ in parts)
    total = np.zeros((2, frames), dtype=np.float32)
    for audio, sign in parts:
        total[:, : audio.shape[1]] += sign * audio
    peak = float(np.abs(total).max()) if total.size else 0.0
    gain = 1.0 / peak if peak > 1.0 else 1.0
    save_audio(target, total * gain, rate)
    target.with_suffix(".gain").write_text(f"{gain:.9g}")
    return gain


def _sidecar(path: Path | None, song: str, notes: list[str]) -> str:
    """A song's tags or lyrics text (any encoding `read_sidecar_text` knows; the staged copy is UTF-8, so
    the encoding is noted here)."""
    if path is None:
        return ""
    text, issues = read_sidecar_text(path)
    notes.extend(f"{song}: {issue.code}: {issue.message}" for issue in issues)
    return text


def stage_song(
    song: SongFolder, audio_dir: Path, stems: Sequence[str], notes: list[str] | None = None
) -> tuple[dict[str, str], dict[str, float]]:
    """Link/render one song's role files with ACE-Step sidecars; returns role -> key and rest gains."""
    notes = [] if notes is None else notes
    tags = split_tags(_sidecar(song.tags_file, song.name, notes))
    lyrics = _sidecar(song.lyrics_file, song.name, notes)
    roles: dict[str, str] = {}
    gains: dict[str, float] = {}
    files: list[tuple[str, Path]] = []
    if song.mix is not None:
        files.append(("mix", audio_dir / f"{song.name}__mix{song.mix.suffix.lower()}"))
        _link(song.mix, files[-1][1])
    for name, path in song.stems.items():
        files.append((f"stem:{name}", audio_dir / f"{song.name}__stem_{name}{path.suffix.lower()}"))
        _link(path, files[-1][1])
    for name in song.stems:
        target = audio_dir / f"{song.name}__rest_{name}.flac"
        gain = _render_rest(song, name, target)
        if gain is not None:
            files.append((f"rest:{name}", target))
            gains[target.stem] = gain
    for role, path in files:
        key = path.stem
        roles[role] = key
        (audio_dir / f"{key}_prompt.txt").write_text(", ".join([*tags, *role_tags(role)]), encoding="utf-8")
        lyric_file = audio_dir / f"{key}_lyrics.txt"
        if lyrics.strip() and role_has_vocals(role, stems):
            lyric_file.write_text(lyrics, encoding="utf-8")
        elif lyric_file.exists():
            lyric_file.unlink()
    return roles, gains


@dataclass
class MultitrackResult:
    dataset: DatasetDict
    layout: MultitrackLayout
    report_text: str
    notes: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line that agrees with the report: songs and records per split."""
        songs = {name: sum(1 for split in self.layout.splits.values() if split == name) for name in SPLITS}
        records = {name: len(self.dataset[name]) for name in SPLITS}
        return (
            f"multitrack: {len(self.layout.songs)} songs (train {songs['train']}, validation "
            f"{songs['validation']}), records train {records['train']}, validation {records['validation']}"
        )


def prepare_multitrack(
    input_dir: str | Path,
    output_dir: str | Path,
    audio_dir: str | Path | None = None,
    stems: Sequence[str] = DEFAULT_STEMS,
    val_fraction: float = 0.1,
    language: str = "auto",
    min_seconds: float = 1.0,
    base_vocab: str | Path | None = None,
    progress: bool = True,
) -> MultitrackResult:
    """Multitrack folder -> prepared dataset at ``output_dir`` (+ ``multitrack.json``).

    ``audio_dir`` (default ``<output_dir>_audio``, beside it: refrain-prepare never scans inside its own
    output) holds the staged role files. ``base_vocab`` seeds the phoneme vocabulary with a base
    bundle's, so a LoRA's lyric ids mean what they meant when the base was trained.
    """
    from refrain.data.prepare import PrepareOptions, prepare_dataset
    from refrain.text.vocab import VOCAB_FILE

    out = Path(output_dir).resolve()
    staging = Path(audio_dir).resolve() if audio_dir is not None else out.with_name(f"{out.name}_audio")
    songs, notes = scan_multitrack(input_dir, stems)
    staging.mkdir(parents=True, exist_ok=True)
    layout = MultitrackLayout(tuple(stems))
    for song in songs:
        layout.songs[song.name], gains = stage_song(song, staging, stems, notes)
        layout.gains.update(gains)
    out.mkdir(parents=True, exist_ok=True)
    if base_vocab is not None and not (out / VOCAB_FILE).exists():
        shutil.copyfile(base_vocab, out / VOCAB_FILE)
    song_of = {key: song for key, (song, _) in layout.roles_by_key().items()}
    options = PrepareOptions(
        output_dir=out,
        source="acestep",
        input_dir=staging,
        val_fraction=val_fraction,
        language=language,
        min_seconds=min_seconds,
        progress=progress,
        split_group=lambda r: song_of.get(r["keys"], r["keys"]),
        split_unit="songs",
    )
    result = prepare_dataset(options)
    assert result.dataset is not None  # prepare_dataset raises when nothing is usable
    records = [r for name in ("train", "validation") for r in result.dataset[name]]
    layout.splits = {song_of.get(r["keys"], r["keys"]): r["split"] for r in records}
    present = {r["keys"] for r in records}
    for song, roles in layout.songs.items():
        missing = sorted(role for role, key in roles.items() if key not in present)
        if missing:
            notes.append(f"{song}: roles {', '.join(missing)} were skipped by preparation (see report.txt)")
    layout.save(out)
    dataset = result.dataset
    return MultitrackResult(dataset, layout, result.report_text, notes, result.report)
