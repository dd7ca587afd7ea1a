"""Phoneme vocabulary: special ids, append-only growth, frozen encoding, JSON round trip."""

from __future__ import annotations

import json

import pytest

from refrain.errors import RefrainInputError
from refrain.text.vocab import SENTENCE_END, WORD_BOUNDARY, PhonemeVocab


def test_special_tokens() -> None:
    vocab = PhonemeVocab()
    assert len(vocab) == 4
    assert vocab.PAD_ID == 0 and vocab.tokens[0] == "<pad>"
    assert vocab.id_of("<unk>") == vocab.UNK_ID == 1
    assert vocab.id_of(SENTENCE_END) == vocab.SENTENCE_END_ID and PhonemeVocab.SENTENCE_END == "<sep>"
    assert vocab.id_of(WORD_BOUNDARY) == vocab.WORD_BOUNDARY_ID


def test_grow_and_frozen_encoding() -> None:
    vocab = PhonemeVocab()
    ids = vocab.encode(["n", "i3", WORD_BOUNDARY, "h", "ao3"], grow=True)
    assert ids == [4, 5, 3, 6, 7]
    assert vocab.encode(["n", "ʃ"]) == [4, vocab.UNK_ID]  # frozen: unknown -> UNK, nothing added
    assert len(vocab) == 8
    assert vocab.encode_sentence(["h"]) == [6, vocab.SENTENCE_END_ID]
    assert vocab.decode([4, 5, 99]) == ["n", "i3", "<unk>"]
    with pytest.raises(ValueError):
        vocab.add(" a ")


def test_save_load_is_stable_and_append_only(tmp_path) -> None:
    vocab = PhonemeVocab(["a", "b", "tʃ", "ɐ̃ʊ̃"])
    phrase = ["tʃ", "a", WORD_BOUNDARY, "ɐ̃ʊ̃", "b"]
    before = vocab.encode(phrase)
    path = vocab.save(tmp_path / "sub" / "phoneme_vocab.json")
    loaded = PhonemeVocab.load(path)
    assert loaded == vocab
    assert loaded.encode(phrase) == before
    loaded.encode(["z", "a", "ʒ"], grow=True)  # growth appends only
    assert loaded.encode(phrase) == before
    assert loaded.tokens[: len(vocab)] == vocab.tokens
    loaded.save(path)
    assert PhonemeVocab.load(path).encode(["z", "ʒ"]) == [len(vocab), len(vocab) + 1]
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == PhonemeVocab.FORMAT_VERSION
    assert path.read_bytes() == loaded.save(tmp_path / "again.json").read_bytes()  # deterministic bytes


def test_load_rejects_bad_files(tmp_path) -> None:
    with pytest.raises(RefrainInputError, match="not found"):
        PhonemeVocab.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    cases = {
        "{not json": "not a JSON",
        json.dumps({"format": "other"}): "not a refrain.phoneme_vocab",
        json.dumps({"format": "refrain.phoneme_vocab", "version": 99, "tokens": []}): "format version 99",
        json.dumps({"format": "refrain.phoneme_vocab", "version": 1, "tokens": ["a"]}): "first tokens",
        json.dumps(
            {
                "format": "refrain.phoneme_vocab",
                "version": 1,
                "tokens": ["<pad>", "<unk>", "<sep>", "<wb>", "a", "a"],
            }
        ): "duplicate",
    }
    for text, message in cases.items():
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(RefrainInputError, match=message):
            PhonemeVocab.load(bad)
