"""Speaker/timbre embeddings named by a record's ``speaker_emb_path`` (ACE-Step's field).

ACE-Step stores one vector per song with ``torch.save``; NumPy ``.npy`` and single-tensor
``.safetensors`` files are read too. An empty path means "no speaker" and gives an all-zero row, which
the DiT replaces by its learned null speaker embedding.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from refrain.errors import RefrainInputError


def _read(path: Path) -> Tensor:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    if suffix == ".safetensors":
        tensors = list(load_file(str(path)).values())
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
            raise RefrainInputError(
                path, f"unreadable speaker embedding ({err})", "save it again with torch.save"
            ) from err
        tensors = list(loaded.values()) if isinstance(loaded, dict) else [loaded]
    if len(tensors) != 1 or not isinstance(tensors[0], Tensor):
        raise RefrainInputError(
            path, "expected exactly one tensor in the speaker embedding file", "save one vector per file"
        )
    return tensors[0]


def load_speaker_embedding(path_text: str, dim: int, root: str | Path | None = None) -> Tensor:
    """(dim,) float32; zeros for an empty path; relative paths are taken from ``root`` (the dataset)."""
    if not path_text:
        return torch.zeros(dim)
    path = Path(path_text).expanduser()
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    if not path.is_file():
        raise RefrainInputError(
            path, "speaker embedding file not found", "fix speaker_emb_path or leave it empty"
        )
    vector = _read(path).float().reshape(-1)
    if vector.numel() != dim:
        raise RefrainInputError(
            path,
            f"speaker embedding has {vector.numel()} values, data.speaker_dim is {dim}",
            "set data.speaker_dim to match",
        )
    return vector
