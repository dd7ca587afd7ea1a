"""Find the audio files of an input folder, and name every entry that looks like audio but cannot be one.

A plain `rglob` + `is_file()` drops some entries without a word and lets others through that break
the run later. This walk follows links to folders once, then names what it cannot use as a skip:
a folder called `x.mp3`, a link loop or a dangling link, a path that is not valid UTF-8 (it cannot be
stored in the Arrow dataset or the JSON report), and the second file of one song in two formats
(`x.mp3` next to `x.wav` share a key and their sidecars; kept both, one would land in train and the
other in validation).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from refrain.data.issues import Issue, make_issue

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".opus")
# Which copy of a song in several formats is kept: lossless first, then by typical quality.
FORMAT_PREFERENCE = (".flac", ".wav", ".opus", ".ogg", ".mp3")


@dataclass(frozen=True)
class FoundFile:
    """One audio-named entry: `problem` is the skip reason when it cannot be used."""

    path: Path
    problem: Issue | None = None


def path_text(path: str | os.PathLike) -> str:
    """A path as printable UTF-8 text: bytes that are not UTF-8 are shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(path: str | os.PathLike) -> bool:
    """False when the path holds bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_audio(folder: Path, exclude: Path | None = None) -> list[FoundFile]:
    """Audio-named entries under `folder` (recursive, sorted by path, hidden names and `exclude` left out)."""
    found: list[FoundFile] = []
    _walk(folder, exclude, {_identity(folder)}, found)
    found.sort(key=lambda f: os.fsencode(f.path))
    return _name_duplicates(found)


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _walk(folder: Path, exclude: Path | None, seen: set[tuple[int, int]], found: list[FoundFile]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
    except OSError as err:
        found.append(FoundFile(folder, make_issue("unreadable", f"folder: {err.strerror}")))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if exclude is not None and path.is_relative_to(exclude):
            continue
        audio_name = path.suffix.lower() in AUDIO_EXTENSIONS
        try:
            info = path.stat()  # follows links
        except OSError as err:
            if entry.is_symlink() and err.errno == errno.ELOOP:
                found.append(FoundFile(path, make_issue("symlink_loop", "the link resolves to itself")))
            elif entry.is_symlink():
                target = path_text(os.readlink(path))
                found.append(FoundFile(path, make_issue("broken_link", f"points at missing {target}")))
            elif audio_name:
                found.append(FoundFile(path, make_issue("unreadable", err.strerror or str(err))))
            continue
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in seen:
                target = path_text(path.resolve())
                found.append(
                    FoundFile(path, make_issue("symlink_loop", f"leads to {target}, already scanned"))
                )
                continue
            seen.add((info.st_dev, info.st_ino))
            if audio_name:
                found.append(FoundFile(path, make_issue("not_a_file", "a folder named like an audio file")))
            _walk(path, exclude, seen, found)
        elif audio_name and not stat.S_ISREG(info.st_mode):
            found.append(FoundFile(path, make_issue("not_a_file", "a device, pipe or socket")))
        elif audio_name and not is_utf8(path):
            found.append(
                FoundFile(path, make_issue("bad_file_name", "e.g. convmv -f latin1 -t utf8 --notest"))
            )
        elif audio_name:
            found.append(FoundFile(path))


def _name_duplicates(found: list[FoundFile]) -> list[FoundFile]:
    """Keep one file per (folder, stem): the most lossless format; the others become skips naming it."""
    groups: dict[tuple[Path, str], list[int]] = defaultdict(list)
    for index, item in enumerate(found):
        if item.problem is None:
            groups[(item.path.parent, item.path.stem)].append(index)
    out = list(found)
    for indices in groups.values():
        if len(indices) < 2:
            continue
        ranked = sorted(indices, key=lambda i: _rank(found[i].path))
        kept = found[ranked[0]].path.name
        for index in ranked[1:]:
            detail = f"kept {kept}; rename one of them if they are different songs"
            out[index] = FoundFile(found[index].path, make_issue("duplicate_stem", detail))
    return out


def _rank(path: Path) -> tuple[int, str]:
    suffix = path.suffix.lower()
    order = FORMAT_PREFERENCE.index(suffix) if suffix in FORMAT_PREFERENCE else len(FORMAT_PREFERENCE)
    return order, path.name


def unique_keys(paths: list[Path], root: Path) -> dict[Path, str]:
    """Key = file stem (as ACE-Step does); stems shared by several files use their folder path too.

    Any key still shared after that (`a/x.wav` and a file named `a__x.wav`) gets a `__2`, `__3` suffix,
    so no two records ever share a key.
    """
    stems: dict[str, int] = defaultdict(int)
    for path in paths:
        stems[path.stem] += 1
    keys: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        key = path.stem if stems[path.stem] == 1 else "__".join(path.relative_to(root).with_suffix("").parts)
        key = path_text(key)
        candidate, number = key, 1
        while candidate in taken:
            number += 1
            candidate = f"{key}__{number}"
        taken.add(candidate)
        keys[path] = candidate
    return keys
