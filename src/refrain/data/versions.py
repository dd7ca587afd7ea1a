"""Dataset versions: a re-run never replaces a prepared dataset without keeping the old one and saying
what changed.

The current dataset is always ``OUT/hf`` (what training's ``--dataset_path OUT`` reads). When a re-run
produces different records, the dataset it replaces moves, with the report that described it, to
``OUT/versions/vNNN-<time>/`` (``hf/``, ``report.txt``, ``report.json``), which loads like any prepared
dataset (``load_prepared(OUT/versions/v001-...)``); a re-run that changes nothing keeps no copy. Only
the record table is versioned (it is small: paths, tags, lyrics and ids); audio is never copied.

`diff_records` names every record added, replaced (same key, other content or fields), dropped, or
moved between train and validation; the report and the console print it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refrain.data.schema import HF_DIR, REPORT_JSON, REPORT_TXT, VOCAB_FILE

VERSIONS_DIR = "versions"


@dataclass
class DatasetChanges:
    """Record keys that differ between the previous dataset and the new one."""

    previous: bool = False  # was there a previous dataset at all
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # same record, other split
    rows_changed: bool = False  # anything at all differs (also repeat count or row order)
    kept_as: str | None = None  # where the previous dataset now lives

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """`added 2, replaced 1, dropped 0, moved between splits 0`."""
        return (
            f"added {len(self.added)}, replaced {len(self.replaced)}, dropped {len(self.dropped)}, "
            f"moved between splits {len(self.moved)}"
        )


def read_rows(output_dir: Path) -> dict[str, list[dict[str, Any]]] | None:
    """The rows of the dataset now at ``output_dir/hf`` per split, or None when there is none readable."""
    import datasets

    folder = output_dir / HF_DIR
    if not folder.is_dir():
        return None
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError):
        return None
    if not isinstance(loaded, datasets.DatasetDict):
        return None
    return {name: split.to_list() for name, split in loaded.items()}


def _by_key(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {row["keys"]: row for split in rows.values() for row in split}  # repeats collapse


def diff_records(
    old: dict[str, list[dict[str, Any]]] | None, new: dict[str, list[dict[str, Any]]]
) -> DatasetChanges:
    """What changed from `old` rows to `new` rows (None: there was no dataset before)."""
    if old is None:
        return DatasetChanges(rows_changed=True)
    before, after = _by_key(old), _by_key(new)
    changes = DatasetChanges(previous=True, rows_changed=old != new)
    changes.added = sorted(set(after) - set(before))
    changes.dropped = sorted(set(before) - set(after))
    for key in sorted(set(before) & set(after)):
        a, b = dict(before[key]), dict(after[key])
        if a.pop("split", None) != b.pop("split", None) and a == b:
            changes.moved.append(key)
        elif a != b:
            changes.replaced.append(key)
    return changes


def _next_version(root: Path) -> str:
    numbers = [int(p.name[1:4]) for p in root.glob("v[0-9][0-9][0-9]-*") if p.name[1:4].isdigit()]
    return f"v{max(numbers, default=0) + 1:03d}-{time.strftime('%Y%m%d-%H%M%S')}"


def archive_previous(output_dir: Path, previous_hf: Path) -> Path:
    """Move a replaced dataset folder, the report that described it and a copy of the vocabulary to
    ``versions/vNNN-<time>/``."""
    root = output_dir / VERSIONS_DIR
    root.mkdir(exist_ok=True)
    target = root / _next_version(root)
    target.mkdir()
    for name in (REPORT_TXT, REPORT_JSON, VOCAB_FILE):  # the vocabulary is append-only: ids stay valid
        if (output_dir / name).is_file():
            shutil.copy2(output_dir / name, target / name)
    os.replace(previous_hf, target / HF_DIR)
    return target
