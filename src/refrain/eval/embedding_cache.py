"""Embeddings computed once per (audio file content, model fingerprint), so re-evaluating a reference set
costs nothing. Stored as plain ``.npy`` (read with ``allow_pickle=False``) under a cache folder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from refrain.fileio import atomic_path


def default_cache_dir() -> Path:
    """``$REFRAIN_CACHE/embeddings``, else ``~/.cache/refrain/embeddings``."""
    base = os.environ.get("REFRAIN_CACHE") or Path.home() / ".cache" / "refrain"
    return Path(base) / "embeddings"


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (the cache key does not depend on its name or place)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class EmbeddingCache:
    """``get(paths, fingerprint, compute)`` returns (N, D) embeddings, computing only the missing ones."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def _entry(self, fingerprint: str, content: str) -> Path:
        safe = fingerprint.replace(":", "_").replace("/", "_")
        return self.root / safe / content[:2] / f"{content}.npy"

    def get(
        self, paths: Sequence[str | Path], fingerprint: str, compute: Callable[[list[Path]], np.ndarray]
    ) -> np.ndarray:
        """Cached rows where present; ``compute(missing_paths) -> (M, D)`` for the rest, then stored."""
        entries = [self._entry(fingerprint, file_hash(p)) for p in paths]
        missing = [i for i, entry in enumerate(entries) if not entry.is_file()]
        self.hits += len(paths) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = np.asarray(compute([Path(paths[i]) for i in missing]), dtype=np.float32)
            for row, index in zip(fresh, missing, strict=True):
                with atomic_path(entries[index]) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, row, allow_pickle=False)
        return (
            np.stack([np.load(entry, allow_pickle=False) for entry in entries])
            if entries
            else np.zeros((0, 0))
        )
