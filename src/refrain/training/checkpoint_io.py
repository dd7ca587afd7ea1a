"""Checkpoint I/O that never leaves a half-written file where a good checkpoint was, and never runs code."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path

FORMAT_VERSION = 1
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|Unsupported (?:global|operand)[^:]*: ?([\w.]+)")


def load_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain values only, or a one-line RefrainInputError.

    A pickle that names a function or class outside torch's allow-list (the way a crafted file runs
    code on load) is refused before anything of it runs; a truncated or foreign file gets its own message.
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = _GLOBAL.search(str(error))
        culprit = next((g for g in found.groups() if g), "an object") if found else "an object"
        raise RefrainInputError(
            path,
            f"refused to load: it pickles {culprit}, which could run code (only tensors and plain values load)",
            "use checkpoints written by refrain-train, or re-save the weights with safetensors",
        ) from None
    except FileNotFoundError:
        raise RefrainInputError(path, "checkpoint not found", "pass an existing .ckpt file") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RefrainInputError(
            path,
            f"not a readable checkpoint ({first.rstrip('.')[:120]})",
            "pass a complete .ckpt written by refrain-train (a save killed midway leaves the previous file)",
        ) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file beside the target, fsync, then rename over it.

    A process killed mid-save leaves the previous checkpoint (or none) in place, never a truncated one.
    Loading goes through ``load_torch_file`` (``torch.load(weights_only=True)``) so a crafted pickle
    cannot run code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_torch_file(path, map_location=map_location or "cpu")
