"""Collate DiT items into the batch the DiT task reads (see the G1/G2 batch contract).

Crops of different lengths are right-padded to the longest in the batch and marked by ``frame_mask``
(padding, not bucketing: one crop length cap keeps batches close in length, and the loss averages over
valid frames only). Prompt tokens and teacher frames are padded the same way with their own masks.
Items that failed to load arrive as None and are left out; the dataset has already counted them.
Two host-side flags ride along as Python values (a device move leaves them on the host), so a GPU step
reads them without synchronising: ``all_frames_valid`` (no crop was padded: attention needs no mask)
and ``style_absent`` (per row: no prompt token, so the style encoders can skip the row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def _pad_stack(tensors: Sequence[Tensor], length: int, dim: int) -> Tensor:
    """Zero-pad every tensor along ``dim`` to ``length`` and stack them on a new batch axis."""
    out = []
    for tensor in tensors:
        pad = [0, 0] * (tensor.dim() - 1 - dim) + [0, length - tensor.shape[dim]]
        out.append(torch.nn.functional.pad(tensor, pad))
    return torch.stack(out)


def _lengths_mask(lengths: Sequence[int], length: int) -> Tensor:
    return torch.arange(length)[None, :] < torch.tensor(list(lengths), dtype=torch.long)[:, None]


def collate_dit(items: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Pad and stack the loadable items; an all-failed batch comes back with batch size 0."""
    good = [item for item in items if item is not None]
    if not good:
        return {
            "latent_mean": torch.zeros(0, 0, 0),
            "latent_std": torch.zeros(0, 0, 0),
            "frame_mask": torch.zeros(0, 0, dtype=torch.bool),
            "lyrics": torch.zeros(0, 0, dtype=torch.long),
            "style": torch.zeros(0, 0, 0),
            "style_mask": torch.zeros(0, 0, dtype=torch.bool),
            "teacher_features": {},
            "teacher_masks": {},
            "keys": [],
            "content_hashes": [],
            "filenames": [],
            "prompts": [],
            "lyrics_text": [],
            "crop_start": torch.zeros(0),
            "all_frames_valid": True,
            "style_absent": (),
        }
    frames = [item["latent_mean"].shape[-1] for item in good]
    length = max(frames)
    tokens = [item["style"].shape[0] for item in good]
    batch: dict[str, Any] = {
        "latent_mean": _pad_stack([item["latent_mean"] for item in good], length, 1),
        "latent_std": _pad_stack([item["latent_std"] for item in good], length, 1),
        "frame_mask": _lengths_mask(frames, length),
        "lyrics": _pad_stack([item["lyrics"] for item in good], length, 0),
        "style": _pad_stack([item["style"] for item in good], max(tokens), 0),
        "style_mask": _lengths_mask(tokens, max(tokens)),
        "teacher_features": {},
        "teacher_masks": {},
        "keys": [item["key"] for item in good],
        "content_hashes": [item.get("content_hash", "") for item in good],  # the songs (per-song references)
        "filenames": [item.get("filename", "") for item in good],
        "prompts": [item["prompt"] for item in good],
        "lyrics_text": [item["lyrics_text"] for item in good],
        "crop_start": torch.tensor([item["crop_start"] for item in good], dtype=torch.float32),
        "all_frames_valid": all(n == length for n in frames),
        "style_absent": tuple(n == 0 for n in tokens),
    }
    for name in sorted(good[0]["teacher_features"]):
        feats = [item["teacher_features"][name] for item in good]
        counts = [f.shape[0] for f in feats]
        batch["teacher_features"][name] = _pad_stack(feats, max(counts), 0)
        batch["teacher_masks"][name] = _lengths_mask(counts, max(counts))
    if any("speaker" in item for item in good):
        batch["speaker"] = torch.stack([item["speaker"] for item in good])
    return batch
