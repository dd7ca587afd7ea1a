"""Whole preparation runs: real fixture folders, the embedded corpus, splits, repeats, atomic saves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from refrain.data.prepare import (
    PARTIAL_DIR,
    PREVIOUS_DIR,
    PrepareOptions,
    prepare_dataset,
    recover_interrupted_swap,
)
from refrain.data.schema import FEATURES, load_prepared
from refrain.data.splits import assign_splits, hash_position
from refrain.errors import RefrainInputError
from refrain.text.vocab import PhonemeVocab


def _rows(dataset) -> dict[str, dict]:
    return {row["keys"]: row for split in ("train", "validation") for row in dataset[split]}


def test_real_acestep_folder(tmp_path: Path, fixtures_dir: Path) -> None:
    out = tmp_path / "ds"
    result = prepare_dataset(
        PrepareOptions(output_dir=out, source="auto", input_dir=fixtures_dir / "acestep_folder")
    )
    assert result.report["source"] == "acestep"
    (row,) = _rows(load_prepared(out)).values()
    assert row["keys"] == "test_track_001" and row["split"] == "train"
    assert row["tags"] == [
        "articulate",
        "spoken word",
        "young adult",
        "rap music",
        "female",
        "clear",
        "energetic",
        "warm",
    ]
    assert abs(row["duration"] - 60.0) < 0.5 and row["sample_rate"] == 48000 and row["channels"] == 2
    assert row["lrc_source"] == "estimated" and row["language"] == "zh"
    assert "[Verse 1]" in row["norm_lyrics"] and row["recaption"]["simplified"] == ""
    assert len(row["lrc"]) == len(row["phoneme_ids"]) >= 40
    times = [line["time"] for line in row["lrc"]]
    assert times == sorted(times) and times[0] >= 0.0 and times[-1] < row["duration"]
    vocab = PhonemeVocab.load(out / "phoneme_vocab.json")
    line = next(i for i, x in enumerate(row["lrc"]) if x["text"].startswith("硅谷 那个 coder"))
    phones = vocab.decode(row["phoneme_ids"][line])
    assert phones[-1] == PhonemeVocab.SENTENCE_END
    assert any(p[-1].isdigit() for p in phones)  # pinyin finals carry tone digits (Chinese words)
    assert any(set(p) & set("ɚɹʊəɛɜ") for p in phones)  # IPA from espeak (the English words)
    assert len(row["content_hash"]) == 64


def test_real_diffrhythm_lrc_folder(tmp_path: Path, fixtures_dir: Path, write_audio) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for name in ("eg_cn.wav", "eg_cn.lrc", "eg_en.lrc"):
        shutil.copy(fixtures_dir / "diffrhythm_lrc" / name, music / name)
    write_audio(
        music / "eg_en.flac", seconds=150.0, sample_rate=8000, channels=1
    )  # eg_en.lrc ships without audio
    (music / "tags.csv").write_text('filename,tags\neg_cn.wav,"ballad, chinese"\n', encoding="utf-8")
    (music / "eg_en.txt").write_text("synthwave, night drive", encoding="utf-8")
    result = prepare_dataset(
        PrepareOptions(output_dir=tmp_path / "ds", source="lrc", input_dir=music, tags_csv=music / "tags.csv")
    )
    rows = _rows(result.dataset)
    cn, en = rows["eg_cn"], rows["eg_en"]
    assert cn["lrc_source"] == "lrc" and cn["tags"] == ["ballad", "chinese"] and cn["language"] == "zh"
    assert cn["lrc"][0] == {"time": 18.23, "text": "让我掉下眼泪的"} and len(cn["lrc"]) == 16
    assert (cn["sample_rate"], cn["channels"]) == (44100, 1) and abs(cn["duration"] - 10.0) < 0.1
    assert en["tags"] == ["synthwave", "night drive"] and en["language"] == "en"
    assert en["lrc"][0] == {"time": 10.0, "text": "Moonlight spills through broken blinds"}
    assert len(en["lrc"]) == len(en["phoneme_ids"]) == 26
    notes = result.report["notes_by_reason"]
    assert notes["lyrics_past_end"] == 1  # eg_cn.wav is a 10 s clip; its lyrics start at 18 s
    assert notes["resampled_at_load"] == 2 and notes["upmixed_at_load"] == 2


@pytest.mark.slow
def test_embedded_corpus(tmp_path: Path) -> None:
    result = prepare_dataset(PrepareOptions(output_dir=tmp_path / "ds", source="embedded", progress=False))
    counts = result.report["counts"]
    assert counts["found"] == counts["kept"] == 28 and counts["skipped"] == 0
    rows = _rows(result.dataset)
    assert rows["happy_electronic_1"]["tags"] == ["happy", "electronic", "123 bpm", "A major"]
    assert all(r["language"] == "instrumental" and r["lrc"] == [] for r in rows.values())
    assert all(
        r["sample_rate"] == 48000 and r["channels"] == 2 and 20 < r["duration"] < 45 for r in rows.values()
    )
    assert len(result.dataset["validation"]) >= 1
    assert result.seconds < 60


def test_splits_are_deterministic_and_repeat_multiplies_train(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    for i in range(6):
        write_audio(music / f"s{i}.wav", seconds=1.2, freq=200 + 50 * i)
    options = PrepareOptions(output_dir=tmp_path / "ds", input_dir=music, repeat_count=3, val_fraction=0.3)
    first = prepare_dataset(options).dataset
    n_val = len(first["validation"])
    assert 1 <= n_val <= 5 and len(first["train"]) == 3 * (6 - n_val)
    assert {r["split"] for r in first["train"]} == {"train"}
    assert {r["split"] for r in first["validation"]} == {"validation"}
    again = prepare_dataset(
        PrepareOptions(output_dir=tmp_path / "ds2", input_dir=music, repeat_count=3, val_fraction=0.3)
    )
    assert sorted(first["validation"]["keys"]) == sorted(again.dataset["validation"]["keys"])
    assert first["train"].features == FEATURES


def test_assign_splits_guarantees_one_of_each() -> None:
    records = [
        {"keys": str(i), "content_hash": f"{i:064x}"} for i in range(1, 4)
    ]  # positions ~0: all validate
    train, val = assign_splits(records, 0.5)
    assert len(train) == 1 and len(val) == 2
    records = [{"keys": "a", "content_hash": "f" * 64}, {"keys": "b", "content_hash": "e" * 64}]
    train, val = assign_splits(records, 0.1)  # positions ~1: none would validate
    assert [r["keys"] for r in val] == ["b"] and [r["keys"] for r in train] == ["a"]
    assert assign_splits([{"keys": "x", "content_hash": "0" * 64}], 0.5)[1] == []  # one record trains
    assert 0.0 <= hash_position("f" * 64) < 1.0


def test_interrupted_swap_is_recovered(tmp_path: Path, write_audio) -> None:
    out = tmp_path / "ds"
    write_audio(tmp_path / "music" / "a.wav", seconds=1.5)
    prepare_dataset(PrepareOptions(output_dir=out, input_dir=tmp_path / "music", progress=False))
    (out / "hf").rename(out / PREVIOUS_DIR)  # killed between the two renames
    (out / PARTIAL_DIR).mkdir()  # and a half-written new copy
    recover_interrupted_swap(out)
    assert (out / "hf").is_dir() and not (out / PREVIOUS_DIR).exists() and not (out / PARTIAL_DIR).exists()
    assert len(load_prepared(out)["train"]) == 1


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(RefrainInputError, match="--repeat_count: 0 is below 1"):
        prepare_dataset(PrepareOptions(output_dir=tmp_path, source="embedded", repeat_count=0))
    with pytest.raises(RefrainInputError, match="--val_fraction"):
        prepare_dataset(PrepareOptions(output_dir=tmp_path, source="embedded", val_fraction=1.5))
    with pytest.raises(RefrainInputError, match="no audio files found"):
        (tmp_path / "empty").mkdir()
        prepare_dataset(PrepareOptions(output_dir=tmp_path / "out", input_dir=tmp_path / "empty"))


def test_report_files_are_written(tmp_path: Path, write_audio) -> None:
    write_audio(tmp_path / "music" / "a.wav", seconds=1.5)
    out = tmp_path / "ds"
    result = prepare_dataset(PrepareOptions(output_dir=out, input_dir=tmp_path / "music", progress=False))
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["counts"]["kept"] == 1
    assert (out / "report.txt").read_text(encoding="utf-8") == result.report_text
    assert (out / "report.png").stat().st_size > 1000
