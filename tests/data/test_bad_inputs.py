"""Every kind of bad input is skipped or repaired with a named reason, and never stops the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from refrain.data.audio_checks import inspect_audio
from refrain.data.mp3_check import scan_mp3
from refrain.data.prepare import PrepareOptions, prepare_dataset
from refrain.data.schema import load_prepared
from refrain.errors import RefrainInputError


def _codes(issues: list) -> set[str]:
    return {issue.code for issue in issues}


def test_zero_byte_file_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    facts, issues = inspect_audio(path, 1.0)
    assert facts is None and _codes(issues) == {"empty_file"}


def test_text_named_mp3_is_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "lyrics.mp3"
    path.write_text("this is a text file, not an mp3\n" * 20, encoding="utf-8")
    facts, issues = inspect_audio(path, 1.0)
    assert facts is None and _codes(issues) == {"undecodable"}
    assert issues[0].message.startswith("the audio cannot be decoded (")  # the decoder's own reason follows


def test_truncated_mp3_is_skipped(tmp_path: Path, write_audio) -> None:
    whole = write_audio(tmp_path / "whole.mp3", seconds=4.0)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2 + 100])  # mid-frame
    assert not scan_mp3(whole).truncated
    scan = scan_mp3(cut)
    assert scan.truncated and "last frame lacks" in scan.detail
    facts, issues = inspect_audio(cut, 1.0)
    assert facts is None and _codes(issues) == {"truncated"}  # as the README says: never kept cut off
    assert "s decoded" in issues[0].message


def test_mp3_with_fewer_frames_than_its_info_tag_is_truncated(tmp_path: Path) -> None:
    # Build an MPEG-1 Layer III stream by hand: an Info frame announcing 10 frames, then only 3.
    header = bytes([0xFF, 0xFB, 0x90, 0x64])  # 128 kbit/s, 44.1 kHz, no padding -> 417-byte frames
    info = bytearray(417)
    info[:4] = header
    info[36:48] = b"Info" + (1).to_bytes(4, "big") + (10).to_bytes(4, "big")
    audio_frame = header + bytes(413)
    path = tmp_path / "short.mp3"
    path.write_bytes(bytes(info) + audio_frame * 3)
    scan = scan_mp3(path)
    assert scan.truncated and scan.announced_frames == 10 and "3 of the 10 frames" in scan.detail


def test_silence_is_skipped(tmp_path: Path, write_audio) -> None:
    samples = np.zeros((96_000, 2), dtype=np.float32)
    samples[:2000] = 0.1  # 2 % signal: still more than 95 % exact zeros
    facts, issues = inspect_audio(write_audio(tmp_path / "quiet.wav", samples=samples), 1.0)
    assert facts is None and _codes(issues) == {"silent"}


def test_one_sample_file_is_too_short(tmp_path: Path, write_audio) -> None:
    path = write_audio(tmp_path / "blip.wav", samples=np.full((1, 2), 0.5, dtype=np.float32))
    facts, issues = inspect_audio(path, 1.0)
    assert facts is None and _codes(issues) == {"too_short"}


def test_8khz_mono_is_kept_with_notes(tmp_path: Path, write_audio) -> None:
    path = write_audio(tmp_path / "phone.wav", seconds=2.0, sample_rate=8000, channels=1)
    facts, issues = inspect_audio(path, 1.0)
    assert facts is not None and (facts.sample_rate, facts.channels) == (8000, 1)
    assert abs(facts.duration - 2.0) < 1e-6
    assert _codes(issues) == {"resampled_at_load", "upmixed_at_load"}


def test_six_channels_are_kept_with_a_downmix_note(tmp_path: Path, write_audio) -> None:
    path = write_audio(tmp_path / "surround.flac", seconds=1.5, channels=6)
    facts, issues = inspect_audio(path, 1.0)
    assert facts is not None and facts.channels == 6
    assert _codes(issues) == {"downmixed_at_load"}


def _sine(frames: int, channels: int = 2) -> np.ndarray:
    mono = 0.3 * np.sin(np.arange(frames) * 2 * np.pi * 440 / 48_000)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def test_nan_samples_are_repaired_and_counted(tmp_path: Path, write_audio) -> None:
    samples = _sine(96_000)
    samples[::100, 0] = np.nan
    samples[5, 1] = np.inf
    facts, issues = inspect_audio(write_audio(tmp_path / "glitch.wav", samples=samples), 1.0)
    assert facts is not None and _codes(issues) == {"nonfinite_repaired"}
    assert "961 of 192000 samples" in issues[0].message


def test_all_nan_is_skipped(tmp_path: Path, write_audio) -> None:
    samples = np.full((96_000, 2), np.nan, dtype=np.float32)
    facts, issues = inspect_audio(write_audio(tmp_path / "nan.wav", samples=samples), 1.0)
    assert facts is None and _codes(issues) == {"all_nonfinite"}


def test_lyric_problems_are_noted_or_repaired_in_a_whole_run(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    write_audio(music / "nolrc.wav", seconds=2.0, freq=300)  # no .lrc at all
    write_audio(music / "blank.wav", seconds=2.0, freq=350)
    (music / "blank.lrc").write_text("  \n", encoding="utf-8")  # empty lyrics
    write_audio(music / "messy.wav", seconds=3.0, freq=400)
    (music / "messy.lrc").write_text(
        "[ti:Messy]\n[00:00.50]hello there\n[0x:12.00]broken stamp\nno stamp at all\n"
        "[00:01.50]\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\n"
        "[00:02.20]\u4f60\u597d\n",
        encoding="utf-8",
    )
    result = prepare_dataset(
        PrepareOptions(output_dir=tmp_path / "out", source="lrc", input_dir=music, progress=False)
    )
    rows = {r["keys"]: r for split in ("train", "validation") for r in result.dataset[split]}
    assert set(rows) == {"nolrc", "blank", "messy"}
    for key in ("nolrc", "blank"):
        assert rows[key]["lrc"] == [] and rows[key]["lrc_source"] == "none"
        assert rows[key]["language"] == "instrumental" and rows[key]["phoneme_ids"] == []
    messy = rows["messy"]
    assert [line["text"] for line in messy["lrc"]][0] == "hello there" and len(messy["lrc"]) == 3
    assert [len(ids) for ids in messy["phoneme_ids"]][1] == 1  # the Arabic line keeps only its sentence end
    assert all(len(ids) > 1 for i, ids in enumerate(messy["phoneme_ids"]) if i != 1)
    report = result.report
    assert report["notes_by_reason"]["no_lyrics"] == 2
    assert report["repaired_by_reason"] == {"malformed_lrc": 1, "unsupported_script": 1}
    (repaired,) = report["repaired"]
    assert repaired["file"].endswith("messy.wav")
    assert "2 line(s)" in next(i["message"] for i in repaired["issues"] if i["code"] == "malformed_lrc")


def test_a_folder_of_every_bad_file_prepares_the_good_one(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    write_audio(music / "good.mp3", seconds=2.5)
    (music / "good_prompt.txt").write_text("rock, guitar", encoding="utf-8")
    (music / "empty.mp3").write_bytes(b"")
    (music / "text.mp3").write_text("not audio\n" * 50, encoding="utf-8")
    write_audio(music / "quiet.flac", samples=np.zeros((48_000 * 2, 2), dtype=np.float32))
    write_audio(music / "blip.wav", samples=np.full((1, 2), 0.5, dtype=np.float32))
    write_audio(music / "nan.wav", samples=np.full((48_000, 2), np.nan, dtype=np.float32))
    mp3 = (music / "good.mp3").read_bytes()
    (music / "cut.mp3").write_bytes(mp3[: len(mp3) // 2 + 50])
    result = prepare_dataset(PrepareOptions(output_dir=tmp_path / "out", input_dir=music, progress=False))
    assert result.report["counts"]["found"] == 7
    assert result.report["skipped_by_reason"] == {
        "all_nonfinite": 1,
        "empty_file": 1,
        "silent": 1,
        "too_short": 1,
        "truncated": 1,
        "undecodable": 1,
    }
    assert result.report["repaired_by_reason"] == {}
    text = (tmp_path / "out" / "report.txt").read_text(encoding="utf-8")
    for name in ("empty.mp3", "text.mp3", "quiet.flac", "blip.wav", "nan.wav", "cut.mp3"):
        assert name in text.split("skipped files:")[1]
    loaded = load_prepared(tmp_path / "out")
    keys = sorted(r["keys"] for split in ("train", "validation") for r in loaded[split])
    assert keys == ["good"]


def test_no_usable_file_raises_after_the_report_and_keeps_the_old_dataset(
    tmp_path: Path, write_audio
) -> None:
    music, out = tmp_path / "music", tmp_path / "out"
    write_audio(music / "song.wav", seconds=2.0)
    prepare_dataset(PrepareOptions(output_dir=out, input_dir=music, progress=False))
    before = sorted(p.name for p in (out / "hf").rglob("*"))
    (music / "song.wav").write_bytes(b"")  # the only song breaks
    with pytest.raises(RefrainInputError, match="none of the 1 audio files is usable"):
        prepare_dataset(PrepareOptions(output_dir=out, input_dir=music, progress=False))
    assert "empty_file" in (out / "report.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in (out / "hf").rglob("*")) == before
    assert len(load_prepared(out)["train"]) == 1


def test_an_unexpected_failure_skips_only_that_file(tmp_path: Path, write_audio, monkeypatch) -> None:
    import refrain.data.process as process

    real = process.build_lyric_fields

    def explode_on_b(text, *args, **kwargs):
        if text and "boom" in text:
            raise RuntimeError("espeak crashed")
        return real(text, *args, **kwargs)

    monkeypatch.setattr(process, "build_lyric_fields", explode_on_b)
    music = tmp_path / "music"
    for name, line in (("a", "fine"), ("b", "boom")):
        write_audio(music / f"{name}.wav", seconds=1.5)
        (music / f"{name}.lrc").write_text(f"[00:00.10]{line}\n", encoding="utf-8")
    out = tmp_path / "out"
    result = prepare_dataset(PrepareOptions(output_dir=out, input_dir=music, progress=False))
    assert result.report["skipped_by_reason"] == {"failed": 1}
    assert "RuntimeError: espeak crashed" in result.report["skipped"][0]["issues"][0]["message"]
    monkeypatch.setattr(process, "build_lyric_fields", real)
    again = prepare_dataset(PrepareOptions(output_dir=out, input_dir=music, progress=False))
    assert (again.decoded, again.reused) == (1, 1) and again.report["counts"]["kept"] == 2  # failures retry


def test_csv_with_an_unknown_language_names_the_row(tmp_path: Path, write_audio) -> None:
    write_audio(tmp_path / "music" / "a.wav", seconds=1.5)
    csv_path = tmp_path / "tags.csv"
    csv_path.write_text("filename,tags,language\na.wav,pop,klingon\n", encoding="utf-8")
    with pytest.raises(RefrainInputError, match=r"tags\.csv: row 1 has the unknown language 'klingon'"):
        prepare_dataset(
            PrepareOptions(
                output_dir=tmp_path / "out", source="lrc", input_dir=tmp_path / "music", tags_csv=csv_path
            )
        )


def test_acestep_lyrics_file_with_timestamps_keeps_them(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    write_audio(music / "s.wav", seconds=3.0)
    (music / "s_lyrics.txt").write_text("[00:00.50]first line\n[00:01.75]second line\n", encoding="utf-8")
    result = prepare_dataset(PrepareOptions(output_dir=tmp_path / "out", input_dir=music, progress=False))
    row = result.dataset["train"][0]
    assert row["lrc_source"] == "lrc" and [x["time"] for x in row["lrc"]] == [0.5, 1.75]
    assert row["norm_lyrics"] == "first line\nsecond line"
