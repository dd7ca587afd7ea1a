"""Bundle manifests: one reader and one verifier for every kind of exported bundle (VAE, DiT)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError
from refrain.fileio import read_json

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
    manifest = read_json(manifest_path, "re-export the bundle")
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


def listed_entries(root: str | Path) -> list[str]:
    """Every file and link under ``root`` (links not followed), as posix paths relative to it."""
    root = Path(root)
    found: list[str] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        links = [d for d in dirs if (here / d).is_symlink()]
        found += [(here / n).relative_to(root).as_posix() for n in (*names, *links)]
    return sorted(found)


def verify_files(root: str | Path, files: Mapping[str, str]) -> None:
    """Every listed file present with its hash, and nothing else in the folder.

    An unlisted file is refused: a loader may pick it up by name (a ``*.safetensors.index.json`` plus
    shards next to the listed weights make diffusers load other weights) under the same bundle hash.
    """
    root = Path(root)
    outside = [n for n in files if Path(n).is_absolute() or ".." in Path(n).parts]
    if outside:
        raise RefrainInputError(
            root / MANIFEST_NAME,
            f"lists {outside[0]!r}, a path outside the bundle folder",
            "re-export the bundle",
        )
    unlisted = [n for n in listed_entries(root) if n != MANIFEST_NAME and n not in files]
    if unlisted:
        more = f"; also unlisted: {', '.join(unlisted[1:4])}" if len(unlisted) > 1 else ""
        raise RefrainInputError(
            root / unlisted[0],
            f"is in the bundle folder but not listed in its manifest (a loader could pick it up){more}",
            "delete it, or re-export the bundle",
        )
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


def files_hash(files: Mapping[str, str]) -> str:
    """sha256 over a file list's names and hashes (format 1 bundle hash; the VAE a DiT bundle holds)."""
    return hashlib.sha256(json.dumps(dict(sorted(files.items())), sort_keys=True).encode()).hexdigest()


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """sha256 over the whole manifest but its ``bundle_hash``: the file hashes, the model spec and every fact.

    Any edit of ``manifest.json`` (a different model constructor or argument included) changes it.
    """
    body = {k: v for k, v in manifest.items() if k != "bundle_hash"}
    canonical = json.dumps(json.loads(json.dumps(body)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def verify_manifest_hash(root: str | Path, manifest: Mapping[str, Any]) -> None:
    """The manifest's ``bundle_hash`` must be the hash of the manifest itself (see ``manifest_hash``)."""
    if manifest_hash(manifest) != manifest.get("bundle_hash"):
        raise RefrainInputError(
            Path(root) / MANIFEST_NAME,
            "bundle_hash does not match the manifest (manifest edited after export)",
            "re-export the bundle",
        )
