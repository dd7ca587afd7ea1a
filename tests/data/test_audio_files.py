"""Scanning names every audio-looking entry it cannot use, and a bad name never ends the run."""

from __future__ import annotations

import os
from pathlib import Path

from refrain.data.audio_files import find_audio, path_text, unique_keys
from refrain.data.prepare import PrepareOptions, prepare_dataset
from refrain.data.sources import SourceItem, scan_folder
from refrain.data.state import content_hash

LATIN1_NAME = b"caf\xe9.wav"  # "café" saved by a Latin-1 system: not valid UTF-8


def _bad_name(folder: Path, write_audio) -> Path:
    """A real WAV whose file name holds a byte that is not UTF-8 (Python sees a lone surrogate)."""
    good = write_audio(folder / "tmp_name.wav", seconds=1.5, freq=500)
    target = os.path.join(os.fsencode(folder), LATIN1_NAME)
    os.rename(os.fsencode(good), target)
    return Path(os.fsdecode(target))


def _problems(folder: Path) -> dict[str, str]:
    return {path_text(f.path.relative_to(folder)): f.problem.code for f in find_audio(folder) if f.problem}


def test_content_hash_reads_a_non_utf8_name(tmp_path: Path, write_audio) -> None:
    path = _bad_name(tmp_path, write_audio)
    digest = content_hash(SourceItem(key="cafe", audio=path))  # was UnicodeEncodeError
    assert len(digest) == 64


def test_a_non_utf8_name_is_skipped_by_name_and_the_run_goes_on(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    write_audio(music / "good.wav", seconds=1.5)
    _bad_name(music, write_audio)
    result = prepare_dataset(PrepareOptions(output_dir=tmp_path / "out", input_dir=music, progress=False))
    assert result.report["skipped_by_reason"] == {"bad_file_name": 1}
    assert result.report["skipped"][0]["file"].endswith("caf\\xe9.wav")
    assert "caf\\xe9.wav" in (tmp_path / "out" / "report.txt").read_text(encoding="utf-8")
    assert [r["keys"] for s in ("train", "validation") for r in result.dataset[s]] == ["good"]


def test_folders_links_and_loops_named_like_audio_are_reported(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    write_audio(music / "song.wav", seconds=1.5)
    (music / "album.mp3").mkdir()  # a folder named like a file
    write_audio(music / "album.mp3" / "inner.flac", seconds=1.5, freq=300)
    os.symlink("b.mp3", music / "a.mp3")  # a.mp3 -> b.mp3 -> a.mp3
    os.symlink("a.mp3", music / "b.mp3")
    os.symlink("missing.wav", music / "gone.wav")
    os.symlink("..", music / "album.mp3" / "up")  # a folder link back to the top
    assert _problems(music) == {
        "a.mp3": "symlink_loop",
        "b.mp3": "symlink_loop",
        "gone.wav": "broken_link",
        "album.mp3": "not_a_file",
        "album.mp3/up": "symlink_loop",
    }
    result = prepare_dataset(PrepareOptions(output_dir=tmp_path / "out", input_dir=music, progress=False))
    assert result.report["skipped_by_reason"] == {"symlink_loop": 3, "broken_link": 1, "not_a_file": 1}
    assert sorted(r["keys"] for s in ("train", "validation") for r in result.dataset[s]) == ["inner", "song"]


def test_linked_folders_are_followed_once(tmp_path: Path, write_audio) -> None:
    write_audio(tmp_path / "real" / "x.wav", seconds=1.5)
    (tmp_path / "music").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "music" / "linked")
    assert [f.path.name for f in find_audio(tmp_path / "music") if f.problem is None] == ["x.wav"]


def test_one_song_in_two_formats_keeps_the_lossless_copy_only(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    write_audio(music / "x.mp3", seconds=1.5)
    write_audio(music / "x.wav", seconds=1.5)
    (music / "x_prompt.txt").write_text("pop", encoding="utf-8")
    items = scan_folder(music, "acestep")
    problems = [(i.audio.name, i.problem.code) for i in items if i.problem]
    assert problems == [("x.mp3", "duplicate_stem")]
    assert "kept x.wav" in items[0].problem.message
    assert [(i.key, i.audio.name) for i in items if not i.problem] == [("x", "x.wav")]
    result = prepare_dataset(PrepareOptions(output_dir=tmp_path / "out", input_dir=music, progress=False))
    assert result.report["skipped_by_reason"] == {"duplicate_stem": 1}
    assert result.report["counts"]["kept"] == 1  # never one copy in train and the other in validation


def test_keys_stay_unique_when_folder_keys_collide_with_a_name(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "x.wav", tmp_path / "a__x.wav", tmp_path / "b" / "x.wav"]
    keys = unique_keys(paths, tmp_path)
    assert keys[paths[0]] == "a__x" and keys[paths[2]] == "b__x"
    assert keys[paths[1]] == "a__x__2" and len(set(keys.values())) == 3
