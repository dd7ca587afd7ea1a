"""The preparation report: counts by reason, hours, histogram, languages, skipped files, three files."""

from __future__ import annotations

import json
from pathlib import Path

from refrain.data.issues import make_issue, status_of
from refrain.data.outcome import FileOutcome
from refrain.data.report import RunFacts, build_report, duration_histogram, render_text, write_report


def _kept(name: str, duration: float, language: str, *codes: str) -> FileOutcome:
    record = {"duration": duration, "language": language}
    return FileOutcome(audio=f"/music/{name}", key=name, issues=[make_issue(c) for c in codes], record=record)


def _outcomes() -> list[FileOutcome]:
    return [
        _kept("a.mp3", 30.0, "en"),
        _kept("b.mp3", 200.0, "zh", "nonfinite_repaired", "resampled_at_load"),
        _kept("c.opus", 35.0, "instrumental", "no_lyrics"),
        FileOutcome(audio="/music/d.mp3", key="d", issues=[make_issue("empty_file", "0 bytes")]),
        FileOutcome(audio="/music/e.wav", key="e", issues=[make_issue("silent", "99.0% exact zeros")]),
    ]


def _facts() -> RunFacts:
    return RunFacts(
        "acestep", "/music", "/out", 1.5, decoded=4, reused=1, split_sizes={"train": 2, "validation": 1}
    )


def test_status_is_the_worst_severity() -> None:
    assert status_of([]) == "kept"
    assert status_of([make_issue("no_lyrics")]) == "kept"
    assert status_of([make_issue("no_lyrics"), make_issue("malformed_lrc")]) == "repaired"
    assert status_of([make_issue("malformed_lrc"), make_issue("silent")]) == "skipped"


def test_histogram_bins_are_half_open() -> None:
    bins = duration_histogram([0.0, 4.99, 5.0, 700.0])
    assert bins[0] == {"low": 0, "high": 5, "count": 2}
    assert bins[1]["count"] == 1
    assert bins[-1] == {"low": 600, "high": None, "count": 1}


def test_report_counts_hours_and_languages() -> None:
    report = build_report(_outcomes(), _facts())
    assert report["counts"] == {"found": 5, "kept": 3, "repaired": 1, "skipped": 2, "decoded": 4, "reused": 1}
    assert report["skipped_by_reason"] == {"empty_file": 1, "silent": 1}
    assert report["repaired_by_reason"] == {"nonfinite_repaired": 1}
    assert report["notes_by_reason"] == {"no_lyrics": 1, "resampled_at_load": 1}
    assert abs(report["total_hours"] - 265.0 / 3600.0) < 1e-12
    assert report["languages"]["zh"] == {"files": 1, "hours": 200.0 / 3600.0}
    assert [s["file"] for s in report["skipped"]] == ["/music/d.mp3", "/music/e.wav"]
    assert report["skipped"][1]["issues"][0]["code"] == "silent"


def test_text_lists_every_skipped_file_with_its_reason() -> None:
    text = render_text(build_report(_outcomes(), _facts()))
    assert "found 5, kept 3 (of which repaired 1), skipped 2" in text
    assert "/music/e.wav: silent: more than 95% of the samples are exact zeros (99.0% exact zeros)" in text
    assert "/music/d.mp3: empty_file" in text
    assert "train 2 x repeat 1 = 2 rows, validation 1" in text
    assert "zh" in text and "instrumental" in text


def test_write_report_writes_txt_json_png(tmp_path: Path) -> None:
    report = build_report(_outcomes(), _facts())
    text = write_report(report, tmp_path)
    assert (tmp_path / "report.txt").read_text(encoding="utf-8") == text
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == json.loads(
        json.dumps(report)
    )
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_records_says_nothing_was_written(tmp_path: Path) -> None:
    facts = _facts()
    facts.dataset_written = False
    outcomes = [FileOutcome(audio="/m/x.mp3", key="x", issues=[make_issue("undecodable", "bad header")])]
    report = build_report(outcomes, facts)
    assert report["total_hours"] == 0.0 and report["languages"] == {}
    assert "NOT written" in write_report(report, tmp_path)
    assert (tmp_path / "report.png").is_file()


def test_files_kept_with_notes_are_named_with_their_reasons(tmp_path: Path) -> None:
    outcomes = [
        *_outcomes(),
        _kept("mono8k.wav", 20.0, "en", "upmixed_at_load", "resampled_at_load"),
        _kept("six.flac", 20.0, "en", "downmixed_at_load"),
        _kept("bare.wav", 20.0, "instrumental", "no_lyrics", "no_tags"),
    ]
    report = build_report(outcomes, _facts())
    noted = {entry["file"]: [i["code"] for i in entry["issues"]] for entry in report["noted"]}
    assert noted == {
        "/music/c.opus": ["no_lyrics"],
        "/music/mono8k.wav": ["upmixed_at_load", "resampled_at_load"],
        "/music/six.flac": ["downmixed_at_load"],
        "/music/bare.wav": ["no_lyrics", "no_tags"],
    }  # a.mp3 has nothing to say and is not listed
    (repaired,) = report["repaired"]
    assert [i["code"] for i in repaired["issues"]] == ["nonfinite_repaired", "resampled_at_load"]
    text = write_report(report, tmp_path)
    assert "kept with notes: 4" in text and "repaired files: 1" in text
    assert (
        "/music/six.flac: downmixed_at_load: more than two channels; they are mixed down to stereo at load"
        in text
    )
    assert "/music/bare.wav: no_lyrics: no lyrics (missing or empty); kept as instrumental; no_tags:" in text
    saved = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert [entry["file"] for entry in saved["noted"]] == list(noted)
    console = render_text(report, limit=2)
    assert "/music/mono8k.wav" in console and "/music/six.flac" not in console
    assert "... and 2 more (all in report.txt and report.json)" in console
