"""load_prepared: refrain's own datasets, ACE-Step converter datasets, and paths that are neither."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from refrain.data.schema import FEATURES, load_prepared
from refrain.errors import RefrainInputError
from refrain.text.vocab import PhonemeVocab

LYRICS = "[verse]\nhello from the other side\nI must have called a thousand times\n\n[chorus]\n你好 世界\n"


def _acestep_dataset(tmp_path: Path, write_audio, repeat: int = 3) -> Path:
    """What ACE-Step's convert2hf_dataset.py saves: a single Dataset, recaption {}, rows repeated."""
    song = write_audio(tmp_path / "data" / "song.mp3", seconds=3.0)
    example = {
        "keys": "song",
        "filename": str(song),
        "tags": ["pop", "female vocal"],
        "speaker_emb_path": "",
        "norm_lyrics": LYRICS,
        "recaption": {},
    }
    target = tmp_path / "zh_lora_dataset"
    datasets.Dataset.from_list([example] * repeat).save_to_disk(str(target))
    return target


def test_acestep_converter_dataset_gets_refrain_fields(tmp_path: Path, write_audio) -> None:
    path = _acestep_dataset(tmp_path, write_audio)
    loaded = load_prepared(path)
    assert set(loaded) == {"train", "validation"} and len(loaded["validation"]) == 0
    assert loaded["train"].features == FEATURES and len(loaded["train"]) == 3
    row = loaded["train"][0]
    assert row["keys"] == "song" and row["tags"] == ["pop", "female vocal"] and row["norm_lyrics"] == LYRICS
    assert row["recaption"] == dict.fromkeys(
        ("simplified", "expanded", "descriptive", "synonyms", "use_cases", "analysis"), ""
    )
    assert (row["sample_rate"], row["channels"]) == (48000, 2) and abs(row["duration"] - 3.0) < 0.1
    assert row["lrc_source"] == "estimated" and [x["text"] for x in row["lrc"]][-1] == "你好 世界"
    assert len(row["phoneme_ids"]) == 3 and all(
        ids[-1] == PhonemeVocab.SENTENCE_END_ID for ids in row["phoneme_ids"]
    )
    # two English lines and one Chinese line: the song's language is its majority, English
    assert row["split"] == "train" and len(row["content_hash"]) == 64 and row["language"] == "en"
    vocab = PhonemeVocab.load(path / "phoneme_vocab.json")  # written next to the data for stable ids
    assert len(vocab) > 10
    again = load_prepared(path)  # the dataset folder still loads with the vocabulary beside it
    assert again["train"][0]["phoneme_ids"] == row["phoneme_ids"]


def test_acestep_rows_with_missing_audio_drop_out(tmp_path: Path, write_audio) -> None:
    path = _acestep_dataset(tmp_path, write_audio)
    ghost = {
        "keys": "ghost",
        "filename": str(tmp_path / "data" / "ghost.mp3"),
        "tags": ["x"],
        "speaker_emb_path": "",
        "norm_lyrics": "",
        "recaption": {},
    }
    rows = datasets.load_from_disk(str(path)).to_list() + [ghost]
    mixed = tmp_path / "mixed"
    datasets.Dataset.from_list(rows).save_to_disk(str(mixed))
    loaded = load_prepared(mixed)
    assert sorted(set(loaded["train"]["keys"])) == ["song"]


def test_acestep_dataset_whose_audio_is_all_gone(tmp_path: Path, write_audio) -> None:
    path = _acestep_dataset(tmp_path, write_audio)
    (tmp_path / "data" / "song.mp3").unlink()
    with pytest.raises(
        RefrainInputError, match="none of the dataset's 3 rows points at a readable audio file"
    ):
        load_prepared(path)


def test_paths_that_are_not_datasets(tmp_path: Path) -> None:
    with pytest.raises(RefrainInputError, match=r"nope: no such folder\. Fix: run `refrain-prepare"):
        load_prepared(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(RefrainInputError, match=r"plain: not a prepared dataset .*refrain-prepare"):
        load_prepared(tmp_path / "plain")
    other = tmp_path / "other"
    datasets.Dataset.from_list([{"text": "a"}]).save_to_disk(str(other))
    with pytest.raises(RefrainInputError, match="lacks the fields keys, filename"):
        load_prepared(other)


def test_prepared_folder_and_its_hf_folder_both_load(tmp_path: Path, write_audio) -> None:
    from refrain.data.prepare import PrepareOptions, prepare_dataset

    write_audio(tmp_path / "music" / "a.wav", seconds=1.5)
    prepare_dataset(PrepareOptions(output_dir=tmp_path / "ds", input_dir=tmp_path / "music", progress=False))
    for path in (tmp_path / "ds", tmp_path / "ds" / "hf"):
        loaded = load_prepared(path)
        assert loaded["train"].features == FEATURES and loaded["train"][0]["keys"] == "a"
