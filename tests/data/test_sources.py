"""Source scanning: ACE-Step folders, LRC folders with text/CSV tags, the embedded corpus, detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from refrain.data.embedded import embedded_tags, embedded_tracks_dir, licence_text, parse_licence_table
from refrain.data.sources import detect_source, load_tags_csv, scan_folder, scan_source, split_tags
from refrain.errors import RefrainInputError


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_split_tags_handles_commas_newlines_and_blanks() -> None:
    assert split_tags("pop, female vocal,,  120 bpm\nupbeat ") == ["pop", "female vocal", "120 bpm", "upbeat"]


def test_licence_table_parses_every_row_of_the_real_file() -> None:
    table = parse_licence_table(licence_text())
    tracks = sorted(
        p.relative_to(embedded_tracks_dir()).as_posix() for p in embedded_tracks_dir().rglob("*.opus")
    )
    assert sorted(table) == tracks  # every shipped track has a row, and nothing else does
    assert table["calm/calm_acoustic_1.opus"] == ("calm", "acoustic", "68 bpm", "C major")
    assert table["nostalgic/nostalgic_electronic_2.opus"] == ("nostalgic", "electronic", "84 bpm", "Bb minor")


def test_licence_rows_outside_a_section_or_malformed_are_ignored() -> None:
    text = "intro text\n  stray.opus  90 bpm  C major  seed 1  [pop]\nsad/\n  a.opus  70 bpm  E minor  seed 3  [piano]\n  b.opus  no bpm\n"
    assert parse_licence_table(text) == {"sad/a.opus": ("sad", "piano", "70 bpm", "E minor")}


def test_embedded_scan_tags_each_track_from_the_table() -> None:
    source, items = scan_source("embedded", None)
    assert source == "embedded"
    assert len(items) == len(embedded_tags())
    item = next(i for i in items if i.key == "happy_electronic_1")
    assert item.inline_tags == ("happy", "electronic", "123 bpm", "A major")
    assert item.lyrics_file is None and item.audio.is_file()


def test_acestep_folder_pairs_prompt_and_lyrics_files(tmp_path: Path) -> None:
    _touch(tmp_path / "a.mp3")
    _touch(tmp_path / "a_prompt.txt", "rock, male")
    _touch(tmp_path / "a_lyrics.txt", "[verse]\nhello")
    _touch(tmp_path / "sub" / "b.flac")
    _touch(tmp_path / "notes.md")
    items = scan_folder(tmp_path, "acestep")
    assert [i.key for i in items] == ["a", "b"]
    a, b = items
    assert a.tags_file == (tmp_path / "a_prompt.txt").resolve()
    assert a.lyrics_file == (tmp_path / "a_lyrics.txt").resolve() and a.lyrics_format == "structured"
    assert b.tags_file is None and b.lyrics_file is None and b.lyrics_format is None


def test_lrc_folder_takes_tags_from_txt_or_csv(tmp_path: Path) -> None:
    _touch(tmp_path / "one.wav")
    _touch(tmp_path / "one.lrc", "[00:01.00]hi")
    _touch(tmp_path / "one.txt", "jazz")
    _touch(tmp_path / "two.ogg")
    _touch(tmp_path / "two_prompt.txt", "folk")
    csv_path = _touch(tmp_path / "tags.csv", 'filename,tags,language\ntwo.ogg,"edm, fast",en\n')
    items = {i.key: i for i in scan_folder(tmp_path, "lrc", tags_csv=csv_path)}
    assert items["one"].lyrics_format == "lrc" and items["one"].tags_file == (tmp_path / "one.txt").resolve()
    assert items["two"].inline_tags == ("edm", "fast") and items["two"].language == "en"
    assert items["two"].tags_file is None  # the CSV row wins over the prompt file


def test_csv_without_header_matches_by_stem(tmp_path: Path) -> None:
    _touch(tmp_path / "x.opus")
    csv_path = _touch(tmp_path / "t.csv", "x,ambient\n")
    assert load_tags_csv(csv_path) == {"x": (("ambient",), None)}
    (item,) = scan_folder(tmp_path, "lrc", tags_csv=csv_path)
    assert item.inline_tags == ("ambient",) and item.language is None


def test_bad_csv_rows_name_the_file(tmp_path: Path) -> None:
    csv_path = _touch(tmp_path / "t.csv", "filename,tags\nonly_a_name\n")
    with pytest.raises(RefrainInputError, match=r"t\.csv: row 1 has 1 column"):
        load_tags_csv(csv_path)
    with pytest.raises(RefrainInputError, match="tags CSV does not exist"):
        load_tags_csv(tmp_path / "missing.csv")


def test_same_stem_in_two_folders_gets_distinct_keys(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "song.mp3")
    _touch(tmp_path / "b" / "song.mp3")
    keys = [i.key for i in scan_folder(tmp_path, "acestep")]
    assert keys == ["a__song", "b__song"]


def test_output_folder_inside_input_is_not_scanned(tmp_path: Path) -> None:
    _touch(tmp_path / "a.wav")
    _touch(tmp_path / "out" / "hf" / "copy.wav")
    assert [i.key for i in scan_folder(tmp_path, "acestep", exclude=tmp_path / "out")] == ["a"]


def test_detect_source(tmp_path: Path) -> None:
    _touch(tmp_path / "lrc" / "s.wav")
    _touch(tmp_path / "lrc" / "s.lrc")
    _touch(tmp_path / "ace" / "s.mp3")
    _touch(tmp_path / "ace" / "s_prompt.txt")
    assert detect_source(tmp_path / "lrc") == "lrc"
    assert detect_source(tmp_path / "ace") == "acestep"
    assert scan_source("auto", tmp_path / "lrc")[0] == "lrc"


def test_folder_sources_need_an_existing_input(tmp_path: Path) -> None:
    with pytest.raises(RefrainInputError, match="needs --input"):
        scan_source("acestep", None)
    with pytest.raises(RefrainInputError, match="input folder does not exist"):
        scan_source("lrc", tmp_path / "nope")
    with pytest.raises(RefrainInputError, match="unknown source"):
        scan_source("mp4", tmp_path)


def test_real_diffrhythm_folder_pairs_eg_cn(fixtures_dir: Path) -> None:
    source, items = scan_source("auto", fixtures_dir / "diffrhythm_lrc")
    assert source == "lrc"
    (item,) = items  # eg_en.lrc has no audio, so only eg_cn is a song
    assert item.key == "eg_cn" and item.lyrics_file.name == "eg_cn.lrc"
