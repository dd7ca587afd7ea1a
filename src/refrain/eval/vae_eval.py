"""VAE reconstruction table: clean -> clean and MP3 -> clean on held-out songs, one row per system and input.

Each held-out song gives one window (``seconds`` long, from the middle of the song, where music is
rarely silent). For every input condition (lossless, or an MP3 setting) the table has a baseline row for
the degraded input itself and one row per bundle, so a reader sees what the VAE adds over doing nothing,
and how much of the MP3 damage it repairs at each bitrate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refrain.audio.io import load_audio
from refrain.audio.mp3 import Mp3Setting, mp3_roundtrip
from refrain.audio.resample import resample
from refrain.bundles.vae import VAEBundle
from refrain.data.schema import load_prepared
from refrain.errors import RefrainInputError
from refrain.eval.signal_metrics import ReconstructionScorer
from refrain.models.vae.oobleck import OobleckVAE

CONDITIONS = ("clean", "cbr64", "cbr128", "cbr320", "vbr0", "vbr4", "vbr7")
BASELINE = "input"  # the system name of the degraded input itself


def parse_condition(name: str) -> Mp3Setting | None:
    """``clean`` -> None; ``cbr128`` -> 128 kbps CBR; ``vbr4`` -> LAME -V 4."""
    try:
        if name == "clean":
            return None
        if name.startswith("cbr"):
            return Mp3Setting(bitrate_kbps=int(name[3:]))
        if name.startswith("vbr"):
            return Mp3Setting(vbr_quality=int(name[3:]))
    except ValueError as error:
        raise RefrainInputError("--conditions", f"{name!r}: {error}", "use clean, cbrN or vbrN") from None
    raise RefrainInputError(
        "--conditions", f"unknown condition {name!r}", "use clean, cbrN (kbps) or vbrN (0-9)"
    )


@dataclass
class Clip:
    """One held-out window: its song key, the source file and the (C, T) samples."""

    key: str
    path: str
    audio: np.ndarray


@dataclass
class VaeTable:
    """Per-clip figures and their means, per (system, condition)."""

    sample_rate: int
    clips: list[str]
    per_clip: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)

    def add(self, system: str, condition: str, row: dict[str, float]) -> None:
        self.per_clip.setdefault(system, {}).setdefault(condition, []).append(row)

    def means(self) -> list[dict[str, Any]]:
        """One row per (system, condition): the metric means over clips (NaN-aware) and the clip count."""
        rows = []
        for system, conditions in self.per_clip.items():
            for condition, values in conditions.items():
                names = values[0].keys()
                row: dict[str, Any] = {"system": system, "condition": condition, "clips": len(values)}
                for name in names:
                    column = np.array([v[name] for v in values], dtype=np.float64)
                    row[name] = float(np.nanmean(column)) if np.isfinite(column).any() else float("nan")
                rows.append(row)
        return rows


def heldout_clips(
    dataset_path: str | Path, sample_rate: int, seconds: float = 10.0, max_clips: int | None = None
) -> list[Clip]:
    """The validation split's songs as ``seconds`` windows from each song's middle (shorter songs: whole)."""
    dataset = load_prepared(dataset_path)
    split = dataset["validation"] if len(dataset["validation"]) else dataset["train"]
    clips = []
    for record in split.select(range(min(len(split), max_clips or len(split)))):
        offset = max(0.0, (float(record["duration"]) - seconds) / 2.0)
        loaded = load_audio(record["filename"], sample_rate, 2, offset, seconds)
        clips.append(Clip(record["keys"], record["filename"], loaded.samples))
    if not clips:
        raise RefrainInputError(
            dataset_path, "has no songs to evaluate", "prepare a dataset with refrain-prepare"
        )
    return clips


@torch.no_grad()
def reconstruct_with(model: OobleckVAE, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(C, T) audio at ``sample_rate`` -> ``model``'s reconstruction (posterior mean), same rate and length."""
    rate = model.sample_rate
    source = audio if rate == sample_rate else resample(audio, sample_rate, rate)
    device = next(model.parameters()).device
    wave = torch.from_numpy(np.ascontiguousarray(source, dtype=np.float32))[None].to(device)
    latents = model.encode_chunked(wave).mode()
    out = model.decode_chunked(latents, length=wave.shape[-1])[0].float().cpu().numpy()
    out = out if rate == sample_rate else resample(out, rate, sample_rate)
    fitted = np.zeros_like(audio)
    frames = min(out.shape[-1], audio.shape[-1])
    fitted[:, :frames] = out[:, :frames]
    return np.clip(fitted, -1.0, 1.0)


def reconstruct(bundle: VAEBundle, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """A bundle's reconstruction of (C, T) audio (see ``reconstruct_with``)."""
    return reconstruct_with(bundle.model, audio, sample_rate)


def evaluate_vae(
    bundles: dict[str, VAEBundle],
    clips: Sequence[Clip],
    sample_rate: int,
    conditions: Iterable[str] = CONDITIONS,
    progress: Callable[[str], None] | None = None,
) -> VaeTable:
    """Score every bundle and the degraded-input baseline on every clip and condition."""
    settings = {name: parse_condition(name) for name in conditions}
    scorer = ReconstructionScorer(sample_rate)
    table = VaeTable(sample_rate, [clip.key for clip in clips])
    for clip in clips:
        for name, setting in settings.items():
            degraded = clip.audio if setting is None else mp3_roundtrip(clip.audio, sample_rate, setting)
            if setting is not None:
                table.add(BASELINE, name, scorer.score(clip.audio, degraded))
            for system, bundle in bundles.items():
                table.add(system, name, scorer.score(clip.audio, reconstruct(bundle, degraded, sample_rate)))
            if progress is not None:
                progress(f"{clip.key} {name}")
    return table
