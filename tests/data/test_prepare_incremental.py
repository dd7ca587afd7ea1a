"""Re-runs are idempotent and redo only what changed (counted by calls to the decoder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import refrain.data.audio_checks as audio_checks
from refrain.data.prepare import PrepareOptions, prepare_dataset
from refrain.text.vocab import PhonemeVocab


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files the audio check decoded during the test."""
    calls: list[str] = []
    real = audio_checks.measure

    def counting(header, *args, **kwargs):
        calls.append(Path(header.path).name)
        return real(header, *args, **kwargs)

    monkeypatch.setattr(audio_checks, "measure", counting)
    return calls


@pytest.fixture
def music(tmp_path: Path, write_audio) -> Path:
    folder = tmp_path / "music"
    for i, (name, line) in enumerate([("a", "hello world"), ("b", "你好 世界"), ("c", "goodbye moon")]):
        write_audio(folder / f"{name}.wav", seconds=1.5, freq=300 + 100 * i)
        (folder / f"{name}.lrc").write_text(f"[00:00.20]{line}\n", encoding="utf-8")
        (folder / f"{name}.txt").write_text(f"tag{i}", encoding="utf-8")
    return folder


def _run(music: Path, out: Path, **kwargs):
    return prepare_dataset(
        PrepareOptions(output_dir=out, source="lrc", input_dir=music, progress=False, **kwargs)
    )


def _records(result) -> dict[str, dict]:
    return {r["keys"]: r for split in ("train", "validation") for r in result.dataset[split]}


def _bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def test_second_run_decodes_nothing_and_gives_the_same_dataset(
    tmp_path: Path, music: Path, decoded: list
) -> None:
    out = tmp_path / "ds"
    first = _run(music, out)
    assert sorted(decoded) == ["a.wav", "b.wav", "c.wav"]
    decoded.clear()
    second = _run(music, out)
    assert decoded == []
    assert (second.decoded, second.reused) == (0, 3)
    assert _records(second) == _records(first)
    assert "decoded 0, reused unchanged 3" in second.report_text


def test_touching_one_file_redoes_only_that_file(tmp_path: Path, music: Path, decoded: list) -> None:
    out = tmp_path / "ds"
    _run(music, out)
    decoded.clear()
    _bump_mtime(music / "b.wav")
    result = _run(music, out)
    assert decoded == ["b.wav"] and (result.decoded, result.reused) == (1, 2)


def test_edited_sidecar_redoes_its_song_and_ids_stay_stable(
    tmp_path: Path, music: Path, decoded: list
) -> None:
    out = tmp_path / "ds"
    first = _records(_run(music, out))
    vocab_before = PhonemeVocab.load(out / "phoneme_vocab.json").tokens
    decoded.clear()
    (music / "c.lrc").write_text("[00:00.20]zebra quartz jukebox\n", encoding="utf-8")
    _bump_mtime(music / "c.lrc")
    second = _records(_run(music, out))
    assert decoded == ["c.wav"]
    assert second["c"]["lrc"][0]["text"] == "zebra quartz jukebox"
    assert second["c"]["content_hash"] != first["c"]["content_hash"]
    # reused records, same phoneme ids; only `split` may move, through the at-least-one-validation rule
    # (c's new hash can make it the lowest, which hands the validation slot from a or b to c)
    for key in ("a", "b"):
        assert {k: v for k, v in second[key].items() if k != "split"} == {
            k: v for k, v in first[key].items() if k != "split"
        }
    vocab_after = PhonemeVocab.load(out / "phoneme_vocab.json").tokens
    assert vocab_after[: len(vocab_before)] == vocab_before and len(vocab_after) > len(vocab_before)


def test_removed_and_added_files(tmp_path: Path, music: Path, decoded: list, write_audio) -> None:
    out = tmp_path / "ds"
    _run(music, out)
    decoded.clear()
    (music / "a.wav").unlink()
    write_audio(music / "d.wav", seconds=1.5, freq=900)
    result = _run(music, out)
    assert decoded == ["d.wav"]
    assert sorted(_records(result)) == ["b", "c", "d"]
    entries = json.loads((out / "prep_state.json").read_text(encoding="utf-8"))["entries"]
    assert sorted(Path(p).name for p in entries) == ["b.wav", "c.wav", "d.wav"]


def test_skipped_files_are_remembered_too(tmp_path: Path, music: Path, decoded: list) -> None:
    out = tmp_path / "ds"
    (music / "bad.wav").write_text("not audio at all, " * 30, encoding="utf-8")
    first = _run(music, out)
    assert first.report["skipped_by_reason"] == {"undecodable": 1}
    decoded.clear()
    second = _run(music, out)
    assert decoded == [] and second.report["skipped_by_reason"] == {"undecodable": 1}


def test_changed_options_or_lost_vocabulary_redo_everything(
    tmp_path: Path, music: Path, decoded: list
) -> None:
    out = tmp_path / "ds"
    _run(music, out)
    decoded.clear()
    _run(music, out, min_seconds=0.5)
    assert len(decoded) == 3
    decoded.clear()
    (out / "phoneme_vocab.json").unlink()
    _run(music, out, min_seconds=0.5)
    assert len(decoded) == 3
    decoded.clear()
    _run(music, out, min_seconds=0.5, repeat_count=4, val_fraction=0.5)  # split/repeat only: nothing redone
    assert decoded == []


def test_corrupt_state_is_ignored(tmp_path: Path, music: Path, decoded: list) -> None:
    out = tmp_path / "ds"
    _run(music, out)
    (out / "prep_state.json").write_text("{ not json", encoding="utf-8")
    decoded.clear()
    result = _run(music, out)
    assert len(decoded) == 3 and result.report["counts"]["kept"] == 3
