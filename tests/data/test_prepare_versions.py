"""A re-run on a changed folder keeps the dataset it replaces and names every record that changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refrain.cli.prepare import main
from refrain.data.prepare import PREVIOUS_DIR, PrepareOptions, prepare_dataset, recover_interrupted_swap
from refrain.data.schema import load_prepared
from refrain.data.versions import VERSIONS_DIR


def _song(folder: Path, write_audio, name: str, line: str, freq: float) -> None:
    write_audio(folder / f"{name}.wav", seconds=1.2, freq=freq)
    (folder / f"{name}.lrc").write_text(f"[00:00.20]{line}\n", encoding="utf-8")
    (folder / f"{name}.txt").write_text("pop", encoding="utf-8")


@pytest.fixture
def music(tmp_path: Path, write_audio) -> Path:
    folder = tmp_path / "music"
    for i, (name, line) in enumerate([("a", "hello world"), ("b", "goodbye moon"), ("c", "good night")]):
        _song(folder, write_audio, name, line, 300 + 100 * i)
    return folder


def _keys(path: Path) -> dict[str, str]:
    return {r["keys"]: r["norm_lyrics"] for split in load_prepared(path).values() for r in split}


def test_changed_folder_keeps_the_previous_dataset(
    tmp_path: Path, music: Path, write_audio, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "ds"
    args = ["--source", "lrc", "--input", str(music), "--output", str(out), "--no_progress"]
    assert main(args) == 0
    assert "changes: first dataset in this folder" in capsys.readouterr().out
    assert main(args) == 0  # nothing changed: no version is made
    assert "changes: none since the previous run" in capsys.readouterr().out
    assert not (out / VERSIONS_DIR).exists()
    before = (out / "report.txt").read_text(encoding="utf-8")

    (music / "b.lrc").write_text("[00:00.20]goodbye sun\n", encoding="utf-8")  # replaced
    (music / "c.wav").unlink()  # dropped
    _song(music, write_audio, "d", "new day", 700)  # added
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "changes since the previous dataset: added 1, replaced 1, dropped 1" in printed
    assert "  added: d" in printed and "  replaced: b" in printed and "  dropped: c" in printed
    (version,) = sorted((out / VERSIONS_DIR).iterdir())
    assert version.name.startswith("v001-") and f"previous dataset kept in {version}" in printed

    assert _keys(out) == {"a": "hello world", "b": "goodbye sun", "d": "new day"}
    assert _keys(version) == {"a": "hello world", "b": "goodbye moon", "c": "good night"}  # loads as it was
    assert (version / "report.txt").read_text(encoding="utf-8") == before
    changes = json.loads((out / "report.json").read_text(encoding="utf-8"))["changes"]
    assert (changes["added"], changes["replaced"], changes["dropped"]) == (["d"], ["b"], ["c"])


def test_second_change_makes_a_second_version(tmp_path: Path, music: Path) -> None:
    out = tmp_path / "ds"
    options = PrepareOptions(output_dir=out, source="lrc", input_dir=music, progress=False)
    prepare_dataset(options)
    for number, line in enumerate(("one", "two"), start=1):
        (music / "a.lrc").write_text(f"[00:00.20]{line}\n", encoding="utf-8")
        result = prepare_dataset(options)
        assert result.changes.replaced == ["a"] and result.changes.kept_as is not None
        assert Path(result.changes.kept_as).name.startswith(f"v{number:03d}-")
    versions = sorted((out / VERSIONS_DIR).iterdir())
    assert [_keys(v)["a"] for v in versions] == ["hello world", "one"] and _keys(out)["a"] == "two"


def test_a_kill_after_the_swap_still_keeps_the_replaced_dataset(tmp_path: Path, music: Path) -> None:
    out = tmp_path / "ds"
    prepare_dataset(PrepareOptions(output_dir=out, source="lrc", input_dir=music, progress=False))
    (out / "hf").rename(out / PREVIOUS_DIR)  # as if killed after moving the old one aside...
    prepare_dataset(
        PrepareOptions(output_dir=tmp_path / "other", source="lrc", input_dir=music, progress=False)
    )
    (tmp_path / "other" / "hf").rename(out / "hf")  # ...and after moving the new one in
    recover_interrupted_swap(out)
    (version,) = (out / VERSIONS_DIR).iterdir()
    assert set(_keys(version)) == {"a", "b", "c"} and not (out / PREVIOUS_DIR).exists()


def test_an_unreadable_previous_dataset_is_kept_not_deleted(tmp_path: Path, music: Path) -> None:
    out = tmp_path / "ds"
    (out / "hf").mkdir(parents=True)
    (out / "hf" / "my_notes.txt").write_text("something the user made", encoding="utf-8")
    result = prepare_dataset(PrepareOptions(output_dir=out, source="lrc", input_dir=music, progress=False))
    assert result.changes.kept_as is not None
    kept = Path(result.changes.kept_as) / "hf" / "my_notes.txt"
    assert kept.read_text(encoding="utf-8") == "something the user made"
    assert f"an unreadable hf/ found there was kept in {result.changes.kept_as}" in result.report_text
