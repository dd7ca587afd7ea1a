"""Checkpoint I/O that never leaves a half-written file where a good checkpoint was, and never runs code.

Every strategy's resume reads through ``load_torch_file`` (``torch.load(weights_only=True)``): single
device and DDP through ``AtomicCheckpointIO``, FSDP through ``SafeFSDPStrategy`` (Lightning's own FSDP
loader unpickles with a plain ``pickle.Unpickler`` and never asks the checkpoint IO plugin);
``check_safe_loading`` refuses any other strategy before a run starts.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import FSDPStrategy, Strategy

from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_OTHER = re.compile(r"Unsupported (?:global|operand)[^:]*: ?([\w.]+)")


def _culprit(error: Exception) -> str:
    """The global a refused pickle names (``pathlib.Path.touch``), from the unpickler's message."""
    found = _GLOBAL.search(str(error)) or _OTHER.search(str(error))
    return found.group(1) if found else "an object"


def load_torch_file(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain values only, or a one-line RefrainInputError.

    A pickle that names a function or class outside torch's allow-list (the way a crafted file runs
    code on load) is refused before anything of it runs; a truncated or foreign file gets its own message.
    ``mmap`` maps the tensors instead of reading them (checking a large checkpoint costs no memory).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        culprit = _culprit(error)
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


_PARTIAL = re.compile(r"^\..+\.ckpt\.[A-Za-z0-9_]{8}\.tmp$")  # atomic_path's ".<name>.<random>.tmp"


def remove_stale_partial_checkpoints(callbacks: Iterable[Callback]) -> list[Path]:
    """Delete what saves killed midway left in the run's checkpoint folders, naming each file.

    ``AtomicCheckpointIO`` writes ``.last.ckpt.<random>.tmp`` and renames it over ``last.ckpt``; a kill
    during the write leaves the temporary file (as large as a checkpoint). Called when a run starts,
    before anything is saved: no save of this run can be in flight, and the good checkpoints stay.
    """
    removed: list[Path] = []
    for callback in callbacks:
        folder = (
            Path(callback.dirpath) if isinstance(callback, ModelCheckpoint) and callback.dirpath else None
        )
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if _PARTIAL.match(path.name) and path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                path.unlink(missing_ok=True)  # another rank of the same start may have removed it
                removed.append(path)
                print(
                    f"removed {path}: a partial checkpoint ({size / 1e6:.1f} MB) left by a killed save",
                    file=sys.stderr,
                )
    return removed


# ----- FSDP: vet every pickle of a full or sharded checkpoint before Lightning's loader reads it -----
_DCP = "torch.distributed.checkpoint"
_DCP_ALLOWED = {f"{_DCP}.metadata": None, f"{_DCP}.filesystem": {"_StorageInfo"}}  # None: its data classes
_PLAIN_ALLOWED = {
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
    "torch.serialization": {"_get_layout"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    """A distributed checkpoint's ``.metadata``: only its own data classes, torch sizes/dtypes and paths."""

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name) if self._allowed(module, name) else None
        if found is None:
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")
        return found

    @staticmethod
    def _allowed(module: str, name: str) -> bool:
        if module == "torch":
            return name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)
        if module in _DCP_ALLOWED:
            names = _DCP_ALLOWED[module]
            if names is not None:
                return name in names
            value = getattr(__import__(module, fromlist=[name]), name, None)
            return isinstance(value, type) and value.__module__ == module  # dataclasses and enums
        return name in _PLAIN_ALLOWED.get(module, set())


def _vet_pickle(path: Path) -> None:
    try:
        _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as error:
        culprit = _culprit(error)
        raise RefrainInputError(
            path,
            f"refused to load: it pickles {culprit}, which could run code (only checkpoint metadata loads)",
            "use checkpoints written by refrain-train",
        ) from None
    except (EOFError, ValueError, AttributeError, ImportError, TypeError, IndexError) as error:
        raise RefrainInputError(
            path,
            f"not a readable checkpoint part ({type(error).__name__})",
            "pass a complete checkpoint folder",
        ) from None


def vet_checkpoint(path: str | Path) -> None:
    """Check a full (file) or sharded (folder) checkpoint with the weights-only rules; nothing of it runs."""
    path = Path(path)
    if path.is_dir():
        for metadata in sorted(p for p in path.iterdir() if p.name.endswith(".metadata")):
            _vet_pickle(metadata)
        meta = path / "meta.pt"
        if meta.is_file():
            load_torch_file(meta)
        return
    load_torch_file(path, mmap=True)


class SafeFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP strategy whose resume only reads tensors and plain values.

    Lightning reads a full checkpoint with its lazy plain-pickle loader and a sharded one's ``.metadata``
    through ``torch.distributed.checkpoint`` (``pickle.load``), bypassing the checkpoint IO plugin. Here
    every pickle is first checked (``vet_checkpoint``), then Lightning loads it with ``weights_only=True``.
    """

    def load_checkpoint(
        self, checkpoint_path: str | Path, weights_only: bool | None = None
    ) -> dict[str, Any]:
        path = Path(self.broadcast(checkpoint_path))
        vet_checkpoint(path)
        return super().load_checkpoint(path, weights_only=True)


def check_safe_loading(strategy: Strategy) -> None:
    """Refuse a strategy whose resume would not go through ``load_torch_file`` (one line, before any run)."""
    own = type(strategy).load_checkpoint
    if isinstance(strategy, FSDPStrategy):
        safe = isinstance(strategy, SafeFSDPStrategy) and own is SafeFSDPStrategy.load_checkpoint
    else:
        safe = own is Strategy.load_checkpoint and isinstance(strategy.checkpoint_io, AtomicCheckpointIO)
    if not safe:
        raise RefrainInputError(
            "trainer.strategy",
            f"{type(strategy).__name__} loads checkpoints with its own unpickler, which could run code",
            "use a conf/trainer preset (trainer=ddp, trainer=fsdp: refrain.training.checkpoint_io.SafeFSDPStrategy)",
        )
