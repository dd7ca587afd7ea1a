"""Make a dataset saved by ACE-Step's converter trainable: fill in refrain's fields.

ACE-Step's converter saves one `Dataset` with keys, filename, tags, speaker_emb_path, norm_lyrics and
recaption (often `{}`), repeated `repeat_count` times. Each distinct song is upgraded once: audio facts
from the same streamed check `refrain-prepare` runs (a container's announced length is not trusted:
a truncated MP3 announcing 12 s may hold 1.57 s and would then fail in every epoch), line times
estimated from its structured lyrics, phoneme ids from the vocabulary next to the dataset (created
there, append-only, when missing). Check results are kept beside the data in `acestep_checks.json`
by content hash, so each file is decoded once, not at every load. A song whose audio fails the check
is left out with a warning naming the file and the reason. It all goes to `train`; ACE-Step
datasets hold nothing out, so `validation` is empty unless the input had one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import datasets
from datasets import DatasetDict

from refrain.data.audio_checks import inspect_audio
from refrain.data.lyric_fields import build_lyric_fields
from refrain.data.schema import SPLITS, empty_recaption, records_to_dataset, vocab_path
from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path
from refrain.text.g2p import G2P
from refrain.text.vocab import PhonemeVocab

log = logging.getLogger(__name__)
CHECKS_FILE = "acestep_checks.json"
MIN_SECONDS = 1.0  # refrain-prepare's default --min_seconds


def _resolve_audio(filename: str, dataset_root: Path) -> Path | None:
    """ACE-Step stores paths as given at conversion time: try them as-is, then next to the dataset."""
    path = Path(filename)
    for candidate in (path, dataset_root.parent / path, dataset_root / path):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _song_hash(audio: Path, lyrics: str, tags: list[str]) -> str:
    digest = hashlib.sha256()
    with audio.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    digest.update(b"\0" + lyrics.encode("utf-8") + b"\0" + "\x1f".join(tags).encode("utf-8"))
    return digest.hexdigest()


class _Upgrader:
    """Per-song cache so a dataset repeated 2000 times is read and phonemized once per song."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.vocab_file = vocab_path(root)
        self.vocab = PhonemeVocab.load(self.vocab_file) if self.vocab_file.is_file() else PhonemeVocab()
        self.start_size = len(self.vocab)
        self._g2p: G2P | None = None
        self._songs: dict[tuple, dict[str, Any] | None] = {}
        self.checks_file = root / CHECKS_FILE
        self.checks = _read_checks(self.checks_file)
        self._checks_changed = False

    def g2p(self) -> G2P:
        if self._g2p is None:
            self._g2p = G2P()
        return self._g2p

    def record(self, row: dict[str, Any], split: str) -> dict[str, Any] | None:
        tags = [str(t) for t in (row.get("tags") or [])]
        lyrics = str(row.get("norm_lyrics") or "")
        cache_key = (row["filename"], lyrics, tuple(tags))
        if cache_key not in self._songs:
            self._songs[cache_key] = self._song(row["filename"], lyrics, tags)
        song = self._songs[cache_key]
        if song is None:
            return None
        return {
            **song,
            "keys": str(row["keys"]),
            "speaker_emb_path": str(row.get("speaker_emb_path") or ""),
            "recaption": empty_recaption(row.get("recaption")),
            "split": split,
        }

    def _song(self, filename: str, lyrics: str, tags: list[str]) -> dict[str, Any] | None:
        audio = _resolve_audio(filename, self.root)
        if audio is None:
            log.warning("%s: audio file not found; its rows are left out", filename)
            return None
        digest = _song_hash(audio, lyrics, tags)
        check = self.checks.get(digest)
        if check is None:
            facts, issues = inspect_audio(audio, MIN_SECONDS, max_seconds=None)
            skip = next((i.message for i in issues if i.severity == "skip"), None)
            check = {"file": str(audio), "skip": skip}
            if facts is not None:
                check.update(duration=facts.duration, sample_rate=facts.sample_rate, channels=facts.channels)
            self.checks[digest] = check
            self._checks_changed = True
        if check.get("skip"):
            log.warning("%s: %s; its rows are left out", audio, check["skip"])
            return None
        fields = build_lyric_fields(
            lyrics, "structured", float(check["duration"]), "auto", self.g2p, self.vocab, source=filename
        )
        return {
            "filename": str(audio),
            "tags": tags,
            "norm_lyrics": lyrics,
            "lrc": fields.lrc,
            "lrc_source": fields.lrc_source,
            "phoneme_ids": fields.phoneme_ids,
            "duration": float(check["duration"]),
            "sample_rate": int(check["sample_rate"]),
            "channels": int(check["channels"]),
            "language": fields.language,
            "content_hash": digest,
        }

    def save_checks(self) -> None:
        """Keep the check results beside the data, so the next load decodes nothing it has seen."""
        if not self._checks_changed:
            return
        try:
            with atomic_path(self.checks_file) as tmp:
                tmp.write_text(json.dumps(self.checks, indent=1, ensure_ascii=False), encoding="utf-8")
        except OSError as err:
            log.warning(
                "%s: could not save the audio checks (%s); they run again next load", self.checks_file, err
            )

    def save_vocab(self) -> None:
        if len(self.vocab) == self.start_size and self.vocab_file.is_file():
            return
        try:
            self.vocab.save(self.vocab_file)
        except OSError as err:
            log.warning(
                "%s: could not save the phoneme vocabulary (%s); ids are valid for this load only",
                self.vocab_file,
                err,
            )


def _read_checks(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def upgrade_acestep_splits(splits: dict[str, datasets.Dataset], path: str | Path) -> DatasetDict:
    """A DatasetDict with refrain's full schema from ACE-Step-schema splits (a lone Dataset = train)."""
    root = Path(path)
    upgrader = _Upgrader(root)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    dropped = 0
    for split, part in splits.items():
        target = "validation" if split in ("validation", "valid", "val", "test") else "train"
        for row in part.to_list():
            record = upgrader.record(row, target)
            if record is None:
                dropped += 1
            else:
                out[target].append(record)
    if not out["train"]:
        raise RefrainInputError(
            root,
            f"none of the dataset's {dropped} rows points at a readable audio file",
            "fix the `filename` paths or the files the warnings above name, or rebuild it with "
            "refrain-prepare --source acestep",
        )
    upgrader.save_vocab()
    upgrader.save_checks()
    if dropped:
        log.warning("%s: %d row(s) left out because their audio is missing or unusable", root, dropped)
    return DatasetDict({name: records_to_dataset(out[name]) for name in SPLITS})
