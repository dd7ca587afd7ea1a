"""The conditioning cache as Hugging Face ``datasets`` Arrow shards, beside the per-song entries.

Layout::

    <dataset_path>/cache/<fingerprint>/shards/data-0000i-of-0000K.arrow   Dataset.save_to_disk output
    <dataset_path>/cache/<fingerprint>/shards/state.json, dataset_info.json

One row per cache entry: ``content_hash``, ``key``, ``frames``, ``seconds`` and ``entry``, the entry's
safetensors file byte for byte, so a row decodes through the same checks as a file and a record's
crop is the same from either layout. K files instead of one per song is what parallel file systems
and object stores serve well; Arrow is memory-mapped, so reading a row reads only that row's bytes.
The per-song entries stay where they are (they are the source; nothing a user made is removed).
"""

from __future__ import annotations

import json
import logging
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from refrain.data.cache import ENTRY_SUFFIX, CacheEntryError, EntryMeta, TensorEntry, open_entry
from refrain.errors import RefrainInputError

log = logging.getLogger(__name__)
SHARDS_DIRNAME = "shards"
FIX = "re-run refrain-encode with --shards N (the same settings) to rewrite the shards"


def shards_dir(cache_folder: str | Path) -> Path:
    return Path(cache_folder) / SHARDS_DIRNAME


def _features() -> Any:
    from datasets import Features, Value

    return Features(
        {
            "content_hash": Value("string"),
            "key": Value("string"),
            "frames": Value("int64"),
            "seconds": Value("float64"),
            "entry": Value("binary"),
        }
    )


@dataclass
class ShardReport:
    folder: Path
    rows: int = 0
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"shards: {self.rows} entries in {self.files} Arrow files ({self.bytes / 1e6:.1f} MB), {self.folder}"
        ]
        lines += [f"  not in the shards (read online at training): {name}" for name in self.skipped]
        return "\n".join(lines)


def write_shards(cache_folder: str | Path, num_shards: int, progress: bool = False) -> ShardReport:
    """Pack every valid per-song entry of ``cache_folder`` into ``num_shards`` Arrow files.

    Built in a temporary folder and swapped in at the end, so an interrupted run leaves the previous
    shards as they were. An entry that fails its checks is named and left out (its record then takes
    the online fallback at training time).
    """
    import datasets

    folder = Path(cache_folder)
    paths = sorted(folder.glob(f"*{ENTRY_SUFFIX}"))
    if not paths:
        raise RefrainInputError(folder, "holds no cache entries to shard", "run refrain-encode first")
    report = ShardReport(shards_dir(folder))

    def rows() -> Iterator[dict[str, Any]]:
        for path in paths:
            try:
                entry = open_entry(path)
            except CacheEntryError as err:
                log.warning("left out of the shards: %s", err)
                report.skipped.append(str(path))
                continue
            meta = entry.meta
            yield {
                "content_hash": meta.content_hash,
                "key": meta.key,
                "frames": entry.num_frames,
                "seconds": meta.audio_seconds,
                "entry": path.read_bytes(),
            }

    if not progress:
        datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(dir=folder, prefix=".shards-") as tmp:
        table = datasets.Dataset.from_generator(
            rows, features=_features(), cache_dir=str(Path(tmp) / "build")
        )
        staged = Path(tmp) / SHARDS_DIRNAME
        table.save_to_disk(str(staged), num_shards=max(1, min(int(num_shards), len(table))))
        report.rows = len(table)
        del table
        if report.folder.exists():
            report.folder.rename(Path(tmp) / "previous")
        staged.rename(report.folder)
    report.files = len(shard_files(report.folder))
    report.bytes = sum(path.stat().st_size for path in shard_files(report.folder))
    return report


def shard_files(folder: str | Path) -> list[Path]:
    """The Arrow files ``save_to_disk`` listed in state.json; RefrainInputError when there are none."""
    folder = Path(folder)
    state = folder / "state.json"
    if not state.is_file():
        raise RefrainInputError(folder, "no Arrow shards here (state.json missing)", FIX)
    try:
        names = [item["filename"] for item in json.loads(state.read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError) as err:
        raise RefrainInputError(state, f"unreadable shard list ({err})", FIX) from err
    return [folder / name for name in names]


class ShardEntry(TensorEntry):
    """An entry decoded from a shard row; ``source`` (folder, row, record) names it in errors."""

    def __init__(self, tensors: dict[str, Any], meta: EntryMeta, source: str) -> None:
        super().__init__(tensors, meta)
        self.source = source


def entry_from_bytes(data: bytes, source: str) -> ShardEntry:
    """A cache entry from its safetensors bytes (a shard row), checked as a file entry is."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + length]).get("__metadata__")
        tensors = load_safetensors(data)
    except (struct.error, ValueError, SafetensorError) as err:
        raise CacheEntryError(source, f"unreadable shard row ({err})", FIX) from err
    entry = ShardEntry(tensors, EntryMeta.from_strings(metadata, source), source)
    entry.check(source)
    return entry


class ShardedCache:
    """Read access to the shards of one cache folder: content hash -> entry, memory-mapped.

    Opened once per process (DataLoader workers reopen it: only the folder and the hash -> row map
    travel by pickle). A missing or unreadable shard file is a one-line RefrainInputError naming it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.files = shard_files(self.folder)
        self._table: Any = None
        self._entries: Any = None
        hashes = self.table()["content_hash"]
        self.rows: dict[str, int] = {str(h): i for i, h in enumerate(hashes)}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_table": None, "_entries": None}

    def table(self) -> Any:
        if self._table is None:
            from datasets import Dataset, concatenate_datasets

            parts = []
            for path in self.files:
                if not path.is_file():
                    raise RefrainInputError(path, "shard file missing", FIX)
                try:
                    parts.append(Dataset.from_file(str(path)))
                except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                    raise RefrainInputError(path, f"unreadable shard ({type(err).__name__})", FIX) from err
            self._table = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        return self._table

    def __contains__(self, content_hash: str) -> bool:
        return content_hash in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def entry(
        self, content_hash: str, fingerprint: str | None = None, prompts: list[str] | None = None
    ) -> ShardEntry:
        """The record's entry from its row, checked like ``open_entry`` (record, encoder, prompts).

        NaN/inf values are caught in the crop, as for a per-song entry (``DiTDataset.item``).
        """
        row = self.rows[content_hash]
        source = f"{self.folder} (row {row}, {content_hash})"
        if self._entries is None:  # the Arrow column itself: a row costs one copy of its bytes
            self._entries = self.table().data.column("entry")
        entry = entry_from_bytes(self._entries[row].as_py(), source)
        meta = entry.meta
        if meta.content_hash != content_hash:
            raise CacheEntryError(source, "row belongs to another record", FIX)
        if fingerprint is not None and meta.fingerprint != fingerprint:
            raise CacheEntryError(source, "row was made by another encoder", FIX)
        if prompts is not None and meta.prompts != list(prompts):
            raise CacheEntryError(source, "the record's prompt variants changed", FIX)
        return entry
