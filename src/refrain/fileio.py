"""Atomic file writes (a reader, or a crash, never sees half of a file that a user relies on), the one
JSON reader whose every failure is a one-line error naming the file, and content digests of files and
model folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError


def read_json(path: str | Path, fix: str, *, missing: str = "not found") -> dict[str, Any]:
    """The JSON object in ``path``; a missing file (problem ``missing``), text that is not UTF-8 JSON (with
    its line and column) or another JSON value is a ``RefrainInputError`` naming the file and ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise RefrainInputError(path, missing, fix)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RefrainInputError(path, f"not UTF-8 text ({err.reason} at byte {err.start})", fix) from None
    except json.JSONDecodeError as err:
        raise RefrainInputError(
            path, f"not a JSON file (invalid JSON at line {err.lineno} column {err.colno}: {err.msg})", fix
        ) from None
    if not isinstance(data, dict):
        raise RefrainInputError(path, f"is not a JSON object (found a {type(data).__name__})", fix)
    return data


@contextmanager
def atomic_path(target: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it over ``target``.

    On any exception the temporary file is removed and ``target`` is left as it was. The file gets
    ordinary permissions (mkstemp's default 0600 would hide datasets and checkpoints from co-workers).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success swap it in place of ``target``.

    An existing ``target`` is moved aside only once the new folder is complete, and removed after the
    swap, so a crash at any point leaves either the old folder or the new one. Folders get 0755 and
    files 0644 (mkdtemp's 0700, and the 0600 some libraries' writers leave, would hide bundles from
    co-workers).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        share_modes(staging)
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def share_modes(folder: str | Path) -> None:
    """Folders 0755 and plain files 0644 under ``folder`` (links untouched): readable by co-workers."""
    root = Path(folder)
    os.chmod(root, 0o755)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a process hashes big weights once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def folder_digest(folder: str | Path) -> str:
    """Content identity of a model folder: names and hashes of its files (hidden files ignored).

    Content, not the path, so a copied dataset and encoder on another machine keep their cache.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise RefrainInputError(
            root, "model folder not found", "point the setting at an existing local folder"
        )
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    listing = {p.relative_to(root).as_posix(): file_digest(p) for p in files}
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()
