"""Make a dataset saved by ACE-Step's converter trainable: fill in refrain's fields.

ACE-Step's converter saves one `Dataset` with keys, filename, tags, speaker_emb_path, norm_lyrics and
recaption (often `{}`), repeated `repeat_count` times. Each distinct song is upgraded once: audio facts
from the file header, line times estimated from its structured lyrics, phoneme ids from the
vocabulary next to the dataset (created there, append-only, when missing). It all goes to `train`;
ACE-Step datasets hold nothing out, so `validation` is empty unless the input had one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import datasets
from datasets import DatasetDict

from refrain.audio.io import audio_info
from refrain.data.lyric_fields import build_lyric_fields
from refrain.data.schema import SPLITS, empty_recaption, records_to_dataset, vocab_path
from refrain.errors import RefrainInputError
from refrain.text.g2p import G2P
from refrain.text.vocab import PhonemeVocab

log = logging.getLogger(__name__)


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
        try:
            info = audio_info(audio)
        except RefrainInputError as err:
            log.warning("%s; its rows are left out", err)
            return None
        fields = build_lyric_fields(
            lyrics, "structured", info.duration, "auto", self.g2p, self.vocab, source=filename
        )
        return {
            "filename": str(audio),
            "tags": tags,
            "norm_lyrics": lyrics,
            "lrc": fields.lrc,
            "lrc_source": fields.lrc_source,
            "phoneme_ids": fields.phoneme_ids,
            "duration": info.duration,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "language": fields.language,
            "content_hash": _song_hash(audio, lyrics, tags),
        }

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
            "fix the `filename` paths or rebuild it with refrain-prepare --source acestep",
        )
    upgrader.save_vocab()
    if dropped:
        log.warning("%s: %d row(s) left out because their audio is missing or unreadable", root, dropped)
    return DatasetDict({name: records_to_dataset(out[name]) for name in SPLITS})
