"""Bundle manifests: one reader and one verifier for every kind of exported bundle (VAE, DiT)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError

MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks so multi-GB weights never sit in memory at once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def read_bundle_manifest(path: str | Path, kind: str, max_version: int, kind_fix: str) -> dict[str, Any]:
    """Read ``manifest.json`` and check that it is a ``kind`` bundle of a version this refrain reads."""
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise RefrainInputError(
            root, "not a refrain bundle (manifest.json missing)", "pass a folder made by refrain-export"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise RefrainInputError(
            manifest_path, f"unreadable JSON ({error.msg})", "re-export the bundle"
        ) from None
    if not isinstance(manifest, dict):
        raise RefrainInputError(manifest_path, "is not a JSON object", "re-export the bundle")
    if manifest.get("kind") != kind:
        raise RefrainInputError(
            manifest_path, f"bundle kind is {manifest.get('kind')!r}, not {kind!r}", kind_fix
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise RefrainInputError(
            manifest_path, f"format_version {version!r} is not valid", "re-export the bundle"
        )
    if version > max_version:
        raise RefrainInputError(
            manifest_path,
            f"{kind} bundle format version {version} is newer than this refrain understands ({max_version})",
            "upgrade refrain",
        )
    return manifest


def verify_files(root: str | Path, files: Mapping[str, str]) -> None:
    """Recompute every listed file hash; a missing or changed file is reported by name."""
    root = Path(root)
    for name, expected in files.items():
        file = root / name
        if not file.is_file():
            raise RefrainInputError(file, "listed in the manifest but missing", "re-export the bundle")
        if sha256_file(file) != expected:
            raise RefrainInputError(
                file,
                "content hash does not match the manifest (file changed or truncated)",
                "re-export the bundle",
            )
