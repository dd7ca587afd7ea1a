"""atomic_path replaces the target only on success and leaves ordinary permissions."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from refrain.fileio import atomic_folder, atomic_path


def test_success_replaces_target_with_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.json"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_atomic_folder_swaps_in_a_complete_readable_folder(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_folder(target) as staging:
        (staging / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_atomic_folder_failure_keeps_the_previous_folder(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed mid-export")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
