"""Phoneme vocabulary: one plain inventory shared by every language, with stable ids.

Ids must never move once a dataset has been prepared, because `phoneme_ids` in the dataset and the
lyric embedding table of a trained DiT both refer to them. So the vocabulary only ever appends:
data prep grows it (`grow=True`), training and sampling use it frozen (unknown -> `UNK_ID`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path, read_json

PAD = "<pad>"
UNK = "<unk>"
SENTENCE_END = "<sep>"
WORD_BOUNDARY = "<wb>"
SPECIAL_TOKENS = (PAD, UNK, SENTENCE_END, WORD_BOUNDARY)

FORMAT_NAME = "refrain.phoneme_vocab"
VOCAB_FILE = "phoneme_vocab.json"  # its name in a prepared dataset and in a DiT bundle
FORMAT_VERSION = 1


class PhonemeVocab:
    """Append-only phoneme <-> id table; ids 0..3 are the special tokens in `SPECIAL_TOKENS` order."""

    PAD_ID = 0
    UNK_ID = 1
    SENTENCE_END_ID = 2
    WORD_BOUNDARY_ID = 3
    PAD = PAD
    UNK = UNK
    SENTENCE_END = SENTENCE_END
    WORD_BOUNDARY = WORD_BOUNDARY
    FORMAT_VERSION = FORMAT_VERSION

    def __init__(self, phonemes: Iterable[str] = ()) -> None:
        self._tokens: list[str] = []
        self._ids: dict[str, int] = {}
        for token in SPECIAL_TOKENS:
            self.add(token)
        for phoneme in phonemes:
            self.add(phoneme)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, phoneme: object) -> bool:
        return phoneme in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PhonemeVocab) and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"PhonemeVocab({len(self)} tokens)"

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order (a copy)."""
        return list(self._tokens)

    def add(self, phoneme: str) -> int:
        """The id of `phoneme`, appending it when new; existing ids are never changed."""
        if not isinstance(phoneme, str) or not phoneme or phoneme != phoneme.strip():
            raise ValueError(
                f"a phoneme must be a non-empty string without surrounding spaces, got {phoneme!r}"
            )
        found = self._ids.get(phoneme)
        if found is not None:
            return found
        self._ids[phoneme] = len(self._tokens)
        self._tokens.append(phoneme)
        return self._ids[phoneme]

    def id_of(self, phoneme: str) -> int:
        """The id of `phoneme`, or `UNK_ID` when the vocabulary does not know it."""
        return self._ids.get(phoneme, self.UNK_ID)

    def encode(self, phonemes: Sequence[str], grow: bool = False) -> list[int]:
        """Ids for `phonemes`; `grow=True` (data prep) appends unknown ones, else they map to `UNK_ID`."""
        if grow:
            return [self.add(p) for p in phonemes]
        return [self._ids.get(p, self.UNK_ID) for p in phonemes]

    def encode_sentence(self, phonemes: Sequence[str], grow: bool = False) -> list[int]:
        """`encode` plus the sentence-end token, DiffRhythm's per-line terminator."""
        return [*self.encode(phonemes, grow=grow), self.SENTENCE_END_ID]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens for `ids` (for inspection and tests); out-of-range ids decode to `<unk>`."""
        return [self._tokens[i] if 0 <= i < len(self._tokens) else UNK for i in ids]

    def to_dict(self) -> dict[str, object]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tokens": list(self._tokens)}

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (a crash never leaves a half-written vocabulary behind)."""
        path = Path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PhonemeVocab:
        """Read a vocabulary written by `save`; bad files raise `RefrainInputError`."""
        data = read_json(path, "run data prep, which writes it", missing="phoneme vocabulary not found")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: object, source: str = "<dict>") -> PhonemeVocab:
        """Inverse of `to_dict`, checking format, version, special tokens and duplicates."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise RefrainInputError(
                source, f"not a {FORMAT_NAME} file", "point at the phoneme_vocab.json data prep wrote"
            )
        if data.get("version") != FORMAT_VERSION:
            raise RefrainInputError(
                source,
                f"vocabulary format version {data.get('version')!r}, this refrain reads {FORMAT_VERSION}",
                "prepare the dataset again with this refrain version",
            )
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise RefrainInputError(
                source, "'tokens' must be a list of non-empty strings", "run data prep again"
            )
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise RefrainInputError(
                source, f"the first tokens must be {list(SPECIAL_TOKENS)}", "run data prep again"
            )
        if len(set(tokens)) != len(tokens):
            raise RefrainInputError(
                source, "duplicate tokens (ids would be ambiguous)", "run data prep again"
            )
        return cls(tokens[len(SPECIAL_TOKENS) :])
