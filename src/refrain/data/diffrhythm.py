"""DiffRhythm's prepared training data, imported once into safetensors, then cropped like DiffRhythm crops it.

DiffRhythm's ``dataset/`` layout: ``train.scp`` lines ``utt|lrc.pt|latent.pt|style.pt`` where ``latent.pt``
is a (1, 64, T) SAO-VAE latent, ``style.pt`` a (1, 512) MuQ-MuLan vector and ``lrc.pt`` a dict with
``time`` (line start seconds) and ``lrc`` (one token-id list per line). ``import_diffrhythm`` reads each
file with ``torch.load(weights_only=True)`` (nothing runs code), checks it, and writes::

    OUT/entries/<n>-<utt>.safetensors   latent (64, T) float32, style (512,), line_times (L,),
                                         line_tokens (N,), line_offsets (L + 1,)
    OUT/index.json                      the entries, and every skipped line of train.scp with its reason
    OUT/phoneme_vocab.json              empty: DiffRhythm's ids are its own (a bundle records a vocabulary)

so a DiffRhythm dataset moves over without re-encoding audio. ``DiffRhythmDataset`` then draws the
release's random crop (start frame uniform in [0, T - max_frames], ``start_time`` = start / T), places the
lyric ids (``refrain.models.backbones.diffrhythm_lyrics``) and, as the release does, ends the valid frames at the
start of the last lyric line in the window.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import Dataset

from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path, read_json
from refrain.models.backbones.diffrhythm_lyrics import (
    BASE_FRAMES,
    HOP,
    SAMPLE_RATE,
    VOCAB_SIZE,
    frame_of,
    lines_in_window,
    place_lyrics,
)
from refrain.text.vocab import VOCAB_FILE, PhonemeVocab

INDEX_NAME = "index.json"
FORMAT = "refrain.diffrhythm_import"
LATENT_CHANNELS, STYLE_DIM = 64, 512


class BadItem(ValueError):
    """One train.scp line that cannot be imported (the reason goes to the index and the console)."""


@dataclass
class ImportResult:
    out_dir: Path
    imported: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise BadItem(f"{what} {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
        if text.startswith("Weights only load failed"):
            text = "it needs code to unpickle, which weights_only loading refuses"
        first = text.splitlines()[0][:120] if text else type(error).__name__
        raise BadItem(f"{what} {path} is not plain tensors ({first})") from None


def _resolve(root: Path, name: str) -> Path:
    path = Path(name.strip())
    return path if path.is_absolute() else root / path


def read_item(root: Path, line: str) -> tuple[str, dict[str, Tensor]]:
    """One ``utt|lrc|latent|style`` line -> (utt, tensors to store); ``BadItem`` names what is wrong."""
    parts = line.split("|")
    if len(parts) != 4:
        raise BadItem(f"has {len(parts)} fields, not utt|lrc.pt|latent.pt|style.pt")
    utt, lrc_name, latent_name, style_name = parts
    latent = _load(_resolve(root, latent_name), "latent")
    style = _load(_resolve(root, style_name), "style")
    lrc = _load(_resolve(root, lrc_name), "lyrics")
    if not isinstance(latent, Tensor) or latent.dim() not in (2, 3) or latent.shape[-2] != LATENT_CHANNELS:
        raise BadItem(f"latent is not (1, {LATENT_CHANNELS}, T) ({getattr(latent, 'shape', type(latent))})")
    latent = latent.reshape(LATENT_CHANNELS, -1).float()
    if not isinstance(style, Tensor) or style.numel() != STYLE_DIM:
        raise BadItem(f"style is not a {STYLE_DIM}-d vector ({getattr(style, 'shape', type(style))})")
    if not (torch.isfinite(latent).all() and torch.isfinite(style).all()):
        raise BadItem("latent or style holds NaN/inf")
    if not isinstance(lrc, Mapping) or "time" not in lrc or "lrc" not in lrc:
        raise BadItem("lyrics file is not a dict with 'time' and 'lrc'")
    times, lines = list(lrc["time"]), list(lrc["lrc"])
    if len(times) != len(lines):
        raise BadItem(f"lyrics have {len(times)} times but {len(lines)} token lines")
    tokens = [[int(t) for t in line] for line in lines]
    flat = [t for line in tokens for t in line]
    if any(not 0 <= t <= VOCAB_SIZE for t in flat):
        raise BadItem(f"lyric token ids outside 0..{VOCAB_SIZE} (DiffRhythm's G2P vocabulary)")
    offsets = np.cumsum([0, *map(len, tokens)])
    return utt.strip(), {
        "latent": latent.contiguous(),
        "style": style.reshape(STYLE_DIM).float().contiguous(),
        "line_times": torch.tensor([float(t) for t in times], dtype=torch.float64),
        "line_tokens": torch.tensor(flat, dtype=torch.long),
        "line_offsets": torch.from_numpy(offsets).long(),
    }


def import_diffrhythm(scp: str | Path, out_dir: str | Path, min_frames: int = 1) -> ImportResult:
    """Import every readable line of ``scp`` into ``out_dir`` (a new folder); bad lines are skipped, named."""
    scp, out = Path(scp), Path(out_dir)
    if not scp.is_file():
        raise RefrainInputError(
            scp, "not found", "pass DiffRhythm's train.scp (lines utt|lrc.pt|latent.pt|style.pt)"
        )
    if (out / INDEX_NAME).exists():
        raise RefrainInputError(
            out, "already holds an import", "choose a new output folder (nothing is overwritten)"
        )
    result = ImportResult(out)
    lines = scp.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{scp}:{number}"
        try:
            utt, tensors = read_item(scp.parent, line.strip())
            if tensors["latent"].shape[-1] < min_frames:
                raise BadItem(f"latent has {tensors['latent'].shape[-1]} frames, fewer than {min_frames}")
        except BadItem as problem:
            result.skipped.append({"line": where, "reason": str(problem)})
            continue
        name = f"{len(result.imported):06d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', utt)[:80]}.safetensors"
        with atomic_path(out / "entries" / name) as tmp:
            save_file(tensors, str(tmp), metadata={"utt": utt, "source": where})
        result.imported.append(
            {"utt": utt, "file": f"entries/{name}", "frames": int(tensors["latent"].shape[-1])}
        )
    if not result.imported:
        first = result.skipped[0] if result.skipped else {"line": str(scp), "reason": "no lines"}
        raise RefrainInputError(
            scp,
            f"no song could be imported ({len(result.skipped)} lines skipped; {first['line']}: {first['reason']})",
            "check the paths in train.scp (absolute, or relative to its folder) and the .pt files",
        )
    index = {
        "format": FORMAT,
        "version": 1,
        "source": str(scp.resolve()),
        "entries": result.imported,
        "skipped": result.skipped,
    }
    PhonemeVocab().save(out / VOCAB_FILE)  # refrain's phoneme vocabulary: unused by DiffRhythm, empty
    with atomic_path(out / INDEX_NAME) as tmp:
        tmp.write_text(json.dumps(index, indent=2))
    return result


class DiffRhythmDataset(Dataset):
    """Crops of an imported DiffRhythm dataset in the batch format the DiffRhythm backbone reads."""

    def __init__(
        self, folder: str | Path, max_frames: int = BASE_FRAMES, seed: int = 0, random_crop: bool = True
    ):
        self.folder = Path(folder)
        index = read_json(self.folder / INDEX_NAME, "import the dataset with refrain-import-diffrhythm")
        if index.get("format") != FORMAT or not index.get("entries"):
            raise RefrainInputError(
                self.folder / INDEX_NAME,
                "is not a refrain DiffRhythm import with entries",
                "run refrain-import-diffrhythm --scp train.scp --output DIR",
            )
        self.entries: list[dict[str, Any]] = list(index["entries"])
        self.max_frames, self.seed, self.random_crop = int(max_frames), int(seed), random_crop
        self.epoch, self.draws = 0, 0

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.entries[index]
        data = load_file(str(self.folder / entry["file"]))
        latent = data["latent"]
        total = int(latent.shape[-1])
        self.draws += 1  # a new crop per draw; workers differ by their torch seed (new every epoch)
        rng = np.random.default_rng([self.seed, self.epoch, index, self.draws, torch.initial_seed() % 2**32])
        start = int(rng.integers(0, max(0, total - self.max_frames) + 1)) if self.random_crop else 0
        offsets = data["line_offsets"].tolist()
        lines = [data["line_tokens"][a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        start_seconds, window_seconds = start * HOP / SAMPLE_RATE, self.max_frames * HOP / SAMPLE_RATE
        times = data["line_times"].tolist()
        window = lines_in_window(times, lines, start_seconds, self.max_frames)
        crop = latent[:, start : start + self.max_frames]
        ends = [t - start_seconds for t in times if 0 <= t - start_seconds < window_seconds]
        frames = min(crop.shape[-1], max(1, frame_of(ends[-1]))) if ends else crop.shape[-1]
        return {
            "latent_mean": crop[:, :frames],
            "latent_std": torch.zeros_like(crop[:, :frames]),
            "diffrhythm_lyrics": place_lyrics(window, self.max_frames)[:frames],
            "diffrhythm_style": data["style"],
            "diffrhythm_start": torch.tensor(start / total),
            "diffrhythm_duration": torch.tensor(frames / self.max_frames),
            "key": entry["utt"],
        }


def collate_diffrhythm(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Right-pad to the longest crop; ``frame_mask`` marks the valid frames."""
    length = max(int(item["latent_mean"].shape[-1]) for item in items)
    pad = lambda t: torch.nn.functional.pad(t, (0, length - t.shape[-1]))  # noqa: E731
    return {
        "latent_mean": torch.stack([pad(i["latent_mean"]) for i in items]),
        "latent_std": torch.stack([pad(i["latent_std"]) for i in items]),
        "frame_mask": torch.stack([torch.arange(length) < i["latent_mean"].shape[-1] for i in items]),
        "diffrhythm_lyrics": torch.stack([pad(i["diffrhythm_lyrics"]) for i in items]),
        "diffrhythm_style": torch.stack([i["diffrhythm_style"] for i in items]),
        "diffrhythm_start": torch.stack([i["diffrhythm_start"] for i in items]).float(),
        "diffrhythm_duration": torch.stack([i["diffrhythm_duration"] for i in items]).float(),
        "keys": [i["key"] for i in items],
    }
