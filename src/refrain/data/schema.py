"""The prepared dataset's on-disk contract: folder layout, record fields, typed Features, loading.

Records keep ACE-Step's fields (keys, filename, tags, speaker_emb_path, norm_lyrics, recaption) so a
dataset made by ACE-Step's converter loads through `load_prepared` too, and add what refrain needs
(timed lyric lines, phoneme ids, audio facts, a content hash and the split). Features are explicit
so empty lists and dicts keep their types when every record of a split is instrumental.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
from datasets import DatasetDict, Features, List, Value

from refrain.errors import RefrainInputError
from refrain.text.vocab import VOCAB_FILE

HF_DIR = "hf"
STATE_FILE = "prep_state.json"
REPORT_TXT = "report.txt"
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
SPLITS = ("train", "validation")
LRC_SOURCES = ("lrc", "estimated", "none")
INSTRUMENTAL = "instrumental"
RECAPTION_KEYS = ("simplified", "expanded", "descriptive", "synonyms", "use_cases", "analysis")
ACESTEP_FIELDS = ("keys", "filename", "tags", "speaker_emb_path", "norm_lyrics", "recaption")

FEATURES = Features(
    {
        "keys": Value("string"),
        "filename": Value("string"),
        "tags": List(Value("string")),
        "speaker_emb_path": Value("string"),
        "norm_lyrics": Value("string"),
        "recaption": {name: Value("string") for name in RECAPTION_KEYS},
        "lrc": List({"time": Value("float64"), "text": Value("string")}),
        "lrc_source": Value("string"),
        "phoneme_ids": List(List(Value("int32"))),
        "duration": Value("float64"),
        "sample_rate": Value("int32"),
        "channels": Value("int32"),
        "language": Value("string"),
        "content_hash": Value("string"),
        "split": Value("string"),
    }
)


def empty_recaption(values: dict[str, Any] | None = None) -> dict[str, str]:
    """All six recaption variants, '' where absent (training treats '' as 'not available')."""
    values = values or {}
    return {name: str(values.get(name) or "") for name in RECAPTION_KEYS}


def records_to_dataset(records: list[dict[str, Any]]) -> datasets.Dataset:
    """A typed Dataset, also for zero records (from_list cannot type an empty list)."""
    if not records:
        return datasets.Dataset.from_dict({name: [] for name in FEATURES}, features=FEATURES)
    return datasets.Dataset.from_list(records, features=FEATURES)


def dataset_dir(path: str | Path) -> Path:
    """The folder holding the Arrow data: `<path>/hf` for a prepared folder, else `path` itself."""
    path = Path(path)
    return path / HF_DIR if (path / HF_DIR).is_dir() else path


def vocab_path(path: str | Path) -> Path:
    """Where the phoneme vocabulary of the dataset at `path` lives (next to the data)."""
    return Path(path) / VOCAB_FILE


def _typed(split: datasets.Dataset) -> datasets.Dataset:
    """The split with exactly FEATURES (extra columns dropped; a cast only when the types differ)."""
    extra = [name for name in split.column_names if name not in FEATURES]
    if extra:
        split = split.remove_columns(extra)
    return split if split.features == FEATURES else split.cast(FEATURES)


def _not_prepared(path: Path, problem: str) -> RefrainInputError:
    return RefrainInputError(
        path,
        problem,
        f"run `refrain-prepare --input <audio folder> --output {path}` and pass that output folder",
    )


def load_prepared(path: str | Path) -> DatasetDict:
    """The prepared DatasetDict (train/validation) at `path`.

    Also accepts a single Dataset saved by ACE-Step's converter: its refrain fields are filled in
    (audio facts from the files, lyric times estimated, phoneme ids from the vocabulary next to it).
    """
    path = Path(path)
    if not path.exists():
        raise _not_prepared(path, "no such folder")
    folder = dataset_dir(path)
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise _not_prepared(path, f"not a prepared dataset ({type(err).__name__})") from err
    if isinstance(loaded, DatasetDict):
        complete = all(name in loaded and set(FEATURES) <= set(loaded[name].column_names) for name in SPLITS)
        if complete:
            return DatasetDict({name: _typed(loaded[name]) for name in SPLITS})
    splits = dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}
    for split, part in splits.items():
        missing = [name for name in ACESTEP_FIELDS if name not in part.column_names]
        if missing:
            raise _not_prepared(path, f"the {split} split lacks the fields {', '.join(missing)}")
    from refrain.data.acestep_compat import upgrade_acestep_splits

    return upgrade_acestep_splits(splits, path)
