"""atomic_path replaces the target only on success and leaves ordinary permissions."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from refrain.fileio import atomic_path


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
