"""Crafted files for the "nothing a user downloads may run code" tests: a pickle that would run code,
and a bundle re-sealed after tampering (file hashes and bundle hash recomputed, as an attacker could)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

MANIFEST_NAME = "manifest.json"


class CodeOnLoad:
    """Unpickling this creates ``marker``: a stand-in for any code a crafted file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def code_pickle(path: Path, marker: Path) -> Path:
    """A torch-format file whose unpickling (``weights_only=False``) touches ``marker``."""
    torch.save({"payload": CodeOnLoad(marker)}, path)
    return path


def issue_spec(target: str, pickle_path: Path) -> dict[str, Any]:
    """The model spec of issue 10: a re-exported ``instantiate`` that unpickles ``pickle_path``."""
    return {
        "_target_": target,
        "config": {"_target_": "torch.load", "f": str(pickle_path), "weights_only": False},
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entries(root: Path) -> list[str]:
    return sorted(
        (Path(folder) / name).relative_to(root).as_posix()
        for folder, _, names in os.walk(root)
        for name in names
    )


def seal_hash(manifest: dict[str, Any]) -> str:
    """The bundle hash a manifest of its format carries (format 1: over the file list; 2: the manifest)."""
    if int(manifest.get("format_version", 1)) >= 2:
        body = {k: v for k, v in manifest.items() if k != "bundle_hash"}
        text = json.dumps(json.loads(json.dumps(body)), sort_keys=True, separators=(",", ":"))
    else:
        text = json.dumps(dict(sorted(manifest["files"].items())), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def edit_manifest(bundle: Path, reseal: bool = False, **changes: Any) -> dict[str, Any]:
    """Change manifest fields; with ``reseal`` recompute the listed files and the bundle hash."""
    path = bundle / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    if reseal:
        manifest["files"] = {n: _sha256(bundle / n) for n in _entries(bundle) if n != MANIFEST_NAME}
        if "bundle_hash" in manifest:
            manifest["bundle_hash"] = seal_hash(manifest)
    path.write_text(json.dumps(manifest, indent=2))
    return manifest
