"""Multitrack preparation: song folders -> one prepared dataset with roles, rest mixes and song-level splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.multitrack import write_songs

from refrain.cli.prepare_multitrack import main
from refrain.data.multitrack import (
    prepare_multitrack,
    read_layout,
    role_has_vocals,
    scan_multitrack,
)
from refrain.data.schema import load_prepared
from refrain.errors import RefrainInputError
from refrain.text.vocab import PhonemeVocab


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mt")
    songs = write_songs(root / "songs")
    prepare_multitrack(songs, root / "ds", val_fraction=0.34, progress=False)
    return root, root / "ds"


def test_roles_records_and_song_splits(prepared: tuple[Path, Path]) -> None:
    root, ds = prepared
    layout = read_layout(ds)
    assert layout is not None and layout.stems == ("vocals", "drums", "bass", "other")
    assert set(layout.songs) == {"song0", "song1", "song2"}
    expected_roles = {"mix", *(f"stem:{s}" for s in layout.stems), *(f"rest:{s}" for s in layout.stems)}
    assert set(layout.songs["song0"]) == expected_roles
    splits = load_prepared(ds)
    records = {r["keys"]: r for part in splits.values() for r in part}
    assert len(records) == 3 * 9
    for song, roles in layout.songs.items():  # a song never straddles the splits
        assert {records[key]["split"] for key in roles.values()} == {layout.splits[song]}
    assert set(layout.splits.values()) == {"train", "validation"}  # both splits, whole songs each
    vocals = records[layout.songs["song0"]["stem:vocals"]]
    assert vocals["lrc"] and vocals["phoneme_ids"] and "vocals" in vocals["tags"]
    assert (
        Path(vocals["filename"]) == (root / "songs" / "song0" / "vocals.flac").resolve()
    )  # linked, not copied
    accompaniment = records[layout.songs["song0"]["rest:vocals"]]
    assert not accompaniment["lrc"] and "accompaniment" in accompaniment["tags"]
    assert records[layout.songs["song2"]["stem:vocals"]]["lrc"] == []  # song2 has no lyrics file


def test_rest_mix_is_the_sum_of_the_other_stems(prepared: tuple[Path, Path]) -> None:
    root, ds = prepared
    layout = read_layout(ds)
    assert layout is not None
    records = {r["keys"]: r for part in load_prepared(ds).values() for r in part}
    rest, _ = sf.read(records[layout.songs["song1"]["rest:drums"]]["filename"], always_2d=True)
    folder = root / "songs" / "song1"
    others = sum(sf.read(folder / f"{n}.flac", always_2d=True)[0] for n in ("vocals", "bass", "other"))
    gain = layout.gains["song1__rest_drums"]
    assert gain <= 1.0 and np.abs(rest).max() <= 1.0
    np.testing.assert_allclose(rest, others * gain, atol=2e-4)


def test_mix_minus_stem_when_stems_are_missing(tmp_path: Path) -> None:
    songs = write_songs(tmp_path / "songs", count=2, stems=("vocals",))
    result = prepare_multitrack(songs, tmp_path / "ds", progress=False, val_fraction=0.0)
    roles = result.layout.songs["song0"]
    assert set(roles) == {"mix", "stem:vocals", "rest:vocals"}
    mix, _ = sf.read(songs / "song0" / "mix.flac", always_2d=True)
    vocals, _ = sf.read(songs / "song0" / "vocals.flac", always_2d=True)
    rest, _ = sf.read(tmp_path / "ds_audio" / f"{roles['rest:vocals']}.flac", always_2d=True)
    np.testing.assert_allclose(rest, mix - vocals, atol=2e-4)


def test_base_vocabulary_keeps_its_ids(tmp_path: Path) -> None:
    base = PhonemeVocab(["zz_a", "zz_b"])
    base.save(tmp_path / "base_vocab.json")
    songs = write_songs(tmp_path / "songs", count=1, stems=("vocals",))
    prepare_multitrack(songs, tmp_path / "ds", base_vocab=tmp_path / "base_vocab.json", progress=False)
    grown = PhonemeVocab.load(tmp_path / "ds" / "phoneme_vocab.json")
    assert grown.tokens[: len(base)] == base.tokens and len(grown) > len(base)


def test_rerun_is_incremental(prepared: tuple[Path, Path]) -> None:
    root, ds = prepared
    audio = root / "ds_audio" / "song0__rest_bass.flac"
    before = audio.stat().st_mtime_ns
    result = prepare_multitrack(root / "songs", ds, val_fraction=0.34, progress=False)
    assert audio.stat().st_mtime_ns == before  # rest mixes are not re-rendered
    assert sum(len(s) for s in result.dataset.values()) == 27


def test_bad_folders(tmp_path: Path) -> None:
    (tmp_path / "empty_song").mkdir()
    (tmp_path / "empty_song" / "readme.txt").write_text("x")
    with pytest.raises(RefrainInputError, match="no song folder with stem files found"):
        scan_multitrack(tmp_path)
    with pytest.raises(RefrainInputError, match="does not exist"):
        scan_multitrack(tmp_path / "missing")
    assert main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2


def test_role_vocals() -> None:
    stems = ("vocals", "drums")
    assert role_has_vocals("rest:drums", stems) and role_has_vocals("stem:vocals", stems)
    assert not role_has_vocals("rest:vocals", stems) and not role_has_vocals("stem:drums", stems)


def test_cli_prints_one_truth_about_the_split(
    prepared: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    """The report used to say "validation 0" (the inner run) and the summary "validation 9" (records)."""
    root, ds = prepared
    args = ["--input", str(root / "songs"), "--output", str(ds), "--val_fraction", "0.34", "--no_progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    layout = read_layout(ds)
    assert layout is not None and sorted(layout.splits.values()) == ["train", "train", "validation"]
    sizes = {name: len(split) for name, split in load_prepared(ds).items()}
    assert sizes == {"train": 18, "validation": 9}
    assert "splits: train 18 x repeat 1 = 18 rows, validation 9" in out
    assert "validation 1 of 3 songs (--val_fraction 0.34 x 3 = 1.02, rounded)" in out
    assert "multitrack: 3 songs (train 2, validation 1), records train 18, validation 9" in out
    assert "validation 0" not in out


def test_unusable_entries_in_a_song_folder_are_named(tmp_path: Path) -> None:
    songs = write_songs(tmp_path / "songs", count=1, stems=("vocals", "drums"))
    (songs / "song0" / "bass.wav").mkdir()  # a folder that looks like a stem
    (songs / "song0" / "vocals.mp3").write_bytes(b"not really")  # beside vocals.flac
    found, notes = scan_multitrack(songs, ("vocals", "drums", "bass"))
    assert found[0].stems["vocals"].name == "vocals.flac" and "bass" not in found[0].stems
    assert any(n.startswith("song0: bass.wav: not_a_file:") for n in notes)
    assert any(n.startswith("song0: vocals.mp3: duplicate_stem:") for n in notes)
