"""`refrain-infer`'s inputs, checked before the model loads, and a training checkpoint used as a bundle.

Loading a bundle (weights, VAE, text encoder) takes seconds to minutes; a missing lyrics file or an
adapter for another base should not cost that wait. ``preflight`` checks every file argument, the
sampler options, the bundle's manifest and each adapter's recorded base from small files only.

``--bundle exps/run/checkpoints/last.ckpt`` samples from a training checkpoint directly: it is exported
to a temporary bundle (the EMA weights, the VAE, vocabulary and text encoder its config names) for the
duration of the command. The song's sidecar names the checkpoint, and the model identity is a hash of the
exported files (the weights, the VAE, the vocabulary), so ``--from_sidecar`` re-exports the same
checkpoint and regenerates the same song (the weights are hashed by content: safetensors does not keep its
metadata's key order, so two exports of one checkpoint are not byte-identical).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError

FILE_ARGS = (
    "source",
    "source_sidecar",
    "prompts_file",
    "lyrics_file",
    "source_lyrics_file",
    "target_lyrics_file",
)


def is_checkpoint(path: Path) -> bool:
    return path.is_file() and path.suffix == ".ckpt"


def bundle_manifest(bundle: Path) -> dict[str, Any] | None:
    """The manifest of ``--bundle`` (None for a checkpoint, whose bundle does not exist yet)."""
    from refrain.models.backbones.ace15 import is_release_folder

    if is_checkpoint(bundle) or is_release_folder(bundle):  # an ACE-Step 1.5 release has no manifest
        return None
    from refrain.bundles.dit import read_dit_manifest

    return read_dit_manifest(bundle)


def preflight(args: argparse.Namespace, bundle: Path, options: Any) -> None:
    """One-line errors for everything that can be wrong without a model: files, options, adapters."""
    from refrain.sampling.modes.base import check_lyrics_flags

    check_lyrics_flags(args)
    for name in FILE_ARGS:
        value = getattr(args, name, None)
        if value is not None and not Path(value).is_file():
            raise RefrainInputError(f"--{name} {value}", "no such file", "pass an existing file")
    if options is not None:
        options.resolved()  # invalid sampler options (steps, scales, intervals) fail here
    manifest = bundle_manifest(bundle)
    if getattr(args, "lora", None):
        from refrain.lora.adapters import AdapterRef, check_adapter_base, read_adapter_spec

        base_hash = str((manifest or {}).get("bundle_hash", "checkpoint"))
        for text in args.lora:
            ref = AdapterRef.parse(text)
            read_adapter_spec(ref.path)
            check_adapter_base(ref.path, base_hash, args.allow_other_base)


def open_bundle(bundle: Path, stack: ExitStack) -> tuple[Path, str | None]:
    """The bundle folder to load and, for a checkpoint, the identity the sidecars record (else None)."""
    if not is_checkpoint(bundle):
        return bundle, None
    from refrain.bundles.dit import WEIGHTS_NAME, read_dit_manifest
    from refrain.bundles.export import export_dit
    from refrain.bundles.manifest import files_hash

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="refrain-ckpt-")))
    exported = export_dit(bundle, folder / "bundle")
    files = dict(read_dit_manifest(exported).get("files") or {})
    files[WEIGHTS_NAME] = safetensors_content_hash(exported / WEIGHTS_NAME)
    return exported, "checkpoint:" + files_hash(files)


def safetensors_content_hash(path: Path, block: int = 1 << 20) -> str:
    """sha256 of a safetensors file's tensors (names, dtypes, shapes, bytes) without its metadata, whose key
    order safetensors does not keep: two exports of one checkpoint differ in bytes but not in content."""
    with open(path, "rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(size))
        header.pop("__metadata__", None)
        digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
