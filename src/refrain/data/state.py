"""What the last preparation run saw, so a re-run redoes only files that changed.

`prep_state.json` maps each audio file to the size and mtime of the audio and its sidecars, the
metadata string of its source, its content hash and the outcome (record or skip reasons). A file
whose fingerprint is unchanged reuses its outcome without being read or decoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refrain.data.sources import SourceItem
from refrain.fileio import atomic_path

STATE_VERSION = 1
_CHUNK = 1 << 20
log = logging.getLogger(__name__)


def fingerprint(item: SourceItem) -> dict[str, Any]:
    """Cheap identity of an item: (size, mtime_ns) of every file it reads plus its inline metadata."""
    files = {}
    for path in (item.audio, *item.sidecars):
        stat = path.stat()
        files[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return {"files": files, "meta": item.meta}


def content_hash(item: SourceItem) -> str:
    """sha256 over the audio bytes, each sidecar's name and bytes, and the inline metadata."""
    digest = hashlib.sha256()
    for path in (item.audio, *item.sidecars):
        digest.update(os.fsencode(path.name) + b"\0")  # bytes as on disk, also for non-UTF-8 names
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    digest.update(item.meta.encode("utf-8"))
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of one file ('' when it does not exist), used to tie the state to its vocabulary."""
    if not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to `path` then rename, so a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


@dataclass
class PrepState:
    """Per-file outcomes of the last run, valid only for the same options and the same vocabulary."""

    options: dict[str, Any] = field(default_factory=dict)
    vocab_sha256: str = ""
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, options: dict[str, Any], vocab_sha256: str) -> PrepState:
        """The saved state, or an empty one when missing, unreadable or made under other settings."""
        fresh = cls(options=dict(options), vocab_sha256=vocab_sha256)
        if not path.is_file():
            return fresh
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            log.warning("%s: unreadable (%s); every file is processed again", path, err)
            return fresh
        if data.get("version") != STATE_VERSION or data.get("options") != options:
            log.info("%s: made with other options; every file is processed again", path)
            return fresh
        if data.get("vocab_sha256") != vocab_sha256:
            log.info("%s: the phoneme vocabulary changed; every file is processed again", path)
            return fresh
        return cls(options=dict(options), vocab_sha256=vocab_sha256, entries=dict(data.get("entries", {})))

    def reusable(self, item: SourceItem, print_: dict[str, Any]) -> dict[str, Any] | None:
        """The stored entry for `item` if its fingerprint is unchanged, else None."""
        entry = self.entries.get(str(item.audio))
        if entry is None or entry.get("fingerprint") != print_:
            return None
        return entry

    def save(self, path: Path, entries: dict[str, dict[str, Any]], vocab_sha256: str) -> None:
        """Replace the entries by this run's (files that disappeared drop out) and write atomically."""
        self.entries = entries
        self.vocab_sha256 = vocab_sha256
        data = {
            "version": STATE_VERSION,
            "options": self.options,
            "vocab_sha256": vocab_sha256,
            "entries": entries,
        }
        write_json_atomic(path, data)
