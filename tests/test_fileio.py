"""atomic_path replaces the target only on success and leaves ordinary permissions; read_json's failures
are one-line errors naming the file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from refrain.errors import RefrainInputError
from refrain.fileio import atomic_folder, atomic_path, read_json


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


def test_atomic_folder_leaves_what_libraries_wrote_0600_readable(tmp_path: Path) -> None:
    """diffusers' save_pretrained writes its safetensors 0600; a bundle's files are 0644 (issue 10)."""
    with atomic_folder(tmp_path / "bundle") as staging:
        (staging / "vae").mkdir(mode=0o700)
        (staging / "vae" / "weights.safetensors").write_bytes(b"w")
        (staging / "vae" / "weights.safetensors").chmod(0o600)
        (staging / "link").symlink_to("vae/weights.safetensors")
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in (tmp_path / "bundle").rglob("*")}
    assert modes["vae"] == 0o755 and modes["weights.safetensors"] == 0o644


def test_atomic_folder_failure_keeps_the_previous_folder(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed mid-export")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "missing thing"),
        (b'{"a": 1,\n  oops}', "invalid JSON at line 2 column 3"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[1, 2]", "is not a JSON object (found a list)"),
    ],
)
def test_read_json_errors_name_the_file_and_the_fix(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "x.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RefrainInputError) as caught:
        read_json(path, "write it again", missing="missing thing")
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message and message.endswith("Fix: write it again")
    assert "\n" not in message


def test_read_json_returns_the_object(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}', encoding="utf-8")
    assert read_json(tmp_path / "ok.json", "unused") == {"a": [1, 2]}
