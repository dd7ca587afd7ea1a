"""`refrain-prepare` command line: prints the report, exits 2 with one line on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from refrain.cli.prepare import main
from refrain.data.schema import load_prepared


def test_cli_builds_and_prints_the_report(tmp_path: Path, write_audio, capsys: pytest.CaptureFixture) -> None:
    music = tmp_path / "music"
    write_audio(music / "x.flac", seconds=1.5)
    (music / "x_prompt.txt").write_text("lofi, chill", encoding="utf-8")
    (music / "x_lyrics.txt").write_text("[verse]\nla la la\n", encoding="utf-8")
    code = main(
        ["--input", str(music), "--output", str(tmp_path / "ds"), "--repeat_count", "2", "--no_progress"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "source: acestep" in out and "found 1, kept 1" in out and "train 1 x repeat 2 = 2 rows" in out
    assert load_prepared(tmp_path / "ds")["train"]["tags"] == [["lofi", "chill"]] * 2


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--source", "lrc", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "ds")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "missing: the input folder does not exist. Fix:" in err


def test_cli_prints_the_report_when_nothing_is_usable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "a.mp3").write_bytes(b"")
    code = main(["--input", str(tmp_path / "music"), "--output", str(tmp_path / "ds"), "--no_progress"])
    captured = capsys.readouterr()
    assert code == 2 and "a.mp3: empty_file" in captured.out
    assert "none of the 1 audio files is usable" in captured.err


def test_data_prep_script_runs_the_same_command(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "data_prep" / "prepare_dataset.py"
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "--source" in done.stdout and "--tags_csv" in done.stdout
