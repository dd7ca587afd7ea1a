"""The JSON sidecar written beside every generated song: everything needed to make it again.

A sidecar holds the mode, the mode's parameters (input files by path *and* sha256), every sampler
option with the concrete seed, the bundle's content hash, and for a song sampled in a batch the whole
batch (float results depend on the batch a song was computed in, so regenerating reruns it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from refrain import __version__
from refrain.bundles.manifest import sha256_file
from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path, read_json

SIDECAR_FORMAT = "refrain.sidecar"
SIDECAR_VERSION = 1


def sidecar_path(audio_path: str | Path) -> Path:
    """``song.flac`` -> ``song.json``."""
    return Path(audio_path).with_suffix(".json")


def file_identity(path: str | Path) -> dict[str, Any]:
    """An input file as a sidecar records it: absolute path and content hash."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise RefrainInputError(file, "file not found", "check the path")
    return {"path": str(file.resolve()), "sha256": sha256_file(file)}


def array_identity(samples: np.ndarray) -> dict[str, Any]:
    """An in-memory input: no path, so a song made from it can be checked but not regenerated."""
    data = np.ascontiguousarray(samples, dtype=np.float32)
    return {"path": None, "sha256": hashlib.sha256(data.tobytes()).hexdigest(), "shape": list(data.shape)}


def resolve_identity(identity: Mapping[str, Any], what: str) -> Path:
    """The file a recorded identity names, checked to be unchanged."""
    path = identity.get("path")
    if not path:
        raise RefrainInputError(
            what, "was an in-memory array, not a file", "regenerate from a song whose inputs were files"
        )
    file = Path(path)
    if not file.is_file():
        raise RefrainInputError(file, f"the {what} this song was made from is missing", "restore the file")
    if sha256_file(file) != identity.get("sha256"):
        raise RefrainInputError(
            file, f"the {what} changed since this song was made (sha256 differs)", "restore the original file"
        )
    return file


def new_sidecar(
    mode: str, params: Mapping[str, Any], options: Mapping[str, Any], **facts: Any
) -> dict[str, Any]:
    """A sidecar dict with the fixed header; ``facts`` are informational (timing, device, bundle, ...)."""
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "refrain_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": mode,
        "params": dict(params),
        "options": dict(options),
        **facts,
    }


def write_sidecar(path: str | Path, sidecar: Mapping[str, Any]) -> Path:
    path = Path(path)
    text = json.dumps(sidecar, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Load and check a sidecar (format and version)."""
    data = read_json(path, "pass the .json written beside a generated song", missing="sidecar not found")
    check_sidecar(data, str(path))
    return data


def check_sidecar(data: Any, source: str = "sidecar") -> None:
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise RefrainInputError(
            source, "not a refrain sidecar", "pass the .json written beside a generated song"
        )
    version = data.get("version")
    if version != SIDECAR_VERSION:
        raise RefrainInputError(
            source,
            f"sidecar version {version!r} is not {SIDECAR_VERSION}",
            "regenerate with the refrain version that wrote it",
        )
    for key in ("mode", "params", "options"):
        if key not in data:
            raise RefrainInputError(source, f"has no {key!r}", "pass an unedited sidecar")
