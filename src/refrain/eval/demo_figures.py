"""Does a model keep a song's time structure? The figures `make demo` prints and the picture it writes.

A VAE that decodes every window to the corpus's average spectrum has a low MR-STFT loss and nothing a
DiT can learn from. Two figures over whole held-out windows (100 ms frames) catch that at a glance:

* ``logmel_corr``: Pearson correlation between the original's and the reconstruction's log-mel frames
  after removing each mel band's mean over time, i.e. how well the reconstruction follows the changes
  of the spectrum over time (a time-invariant average spectrum scores 0, a perfect copy 1);
* ``loudness_std_ratio``: the reconstruction's loudness standard deviation over time divided by the
  original's (``refrain.eval.song_stats``: 400 ms windows every 100 ms).

For generated songs, ``song_stats.song_statistics`` (loudness std in dB, spectral-centroid variation)
is compared with the corpus's own tracks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from refrain.audio.io import load_audio
from refrain.data.schema import load_prepared
from refrain.eval.song_stats import song_statistics
from refrain.eval.vae_eval import heldout_clips, reconstruct_with
from refrain.models.vae.oobleck import OobleckVAE

FRAME_SECONDS = 0.1  # one figure frame: 100 ms
DYNAMIC_RANGE_DB = 80.0  # log-mel floor below the original's peak (silence must not dominate)
VAE_TARGETS = {"logmel_corr": 0.8, "loudness_std_ratio": 0.5}
SONG_TARGETS = {"loudness_std_db": 1.5, "centroid_variation": 0.1}


def log_mel_frames(audio: np.ndarray, sample_rate: int, n_mels: int = 64) -> torch.Tensor:
    """(n_mels, frames) log-mel (dB) of the mono mix, one frame every 100 ms with a ~100 ms window."""
    from refrain.audio.spectrogram import mel_spectrogram

    mono = torch.from_numpy(np.asarray(audio, dtype=np.float32).reshape(-1, np.shape(audio)[-1]).mean(0))
    hop = int(FRAME_SECONDS * sample_rate)
    n_fft = 1 << (hop - 1).bit_length()  # next power of two >= one frame
    return mel_spectrogram(mono, sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)


def time_structure(original: np.ndarray, reconstruction: np.ndarray, sample_rate: int) -> dict[str, float]:
    """``logmel_corr`` and ``loudness_std_ratio`` of a reconstruction against its original (module doc)."""
    ref, rec = log_mel_frames(original, sample_rate), log_mel_frames(reconstruction, sample_rate)
    floor = float(ref.max()) - DYNAMIC_RANGE_DB
    ref, rec = ref.clamp_min(floor), rec.clamp_min(floor)
    ref = ref - ref.mean(dim=1, keepdim=True)
    rec = rec - rec.mean(dim=1, keepdim=True)
    denominator = float(ref.norm() * rec.norm())
    corr = float((ref * rec).sum()) / denominator if denominator > 0 else 0.0
    original_std = song_statistics(original, sample_rate)["loudness_std_db"]
    recon_std = song_statistics(reconstruction, sample_rate)["loudness_std_db"]
    ratio = recon_std / original_std if original_std > 0 else float("nan")
    return {"logmel_corr": corr, "loudness_std_ratio": ratio}


def vae_time_structure(
    model: OobleckVAE, dataset_path: str | Path, seconds: float = 10.0
) -> list[dict[str, float | str]]:
    """One row per held-out song (a ``seconds`` window from its middle, reconstructed from clean audio)."""
    rate = model.sample_rate
    rows: list[dict[str, float | str]] = []
    model.eval()
    for clip in heldout_clips(dataset_path, rate, seconds):
        figures = time_structure(clip.audio, reconstruct_with(model, clip.audio, rate), rate)
        rows.append({"song": clip.key, **figures})
    return rows


def mean_row(rows: Sequence[Mapping[str, float | str]], name: str = "mean") -> dict[str, float | str]:
    """The numeric columns' means over ``rows``, labelled ``name`` in the first column."""
    first = next(iter(rows[0]))
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    return {first: name, **{k: float(np.mean([float(r[k]) for r in rows])) for k in keys}}


def corpus_statistics(dataset_path: str | Path, sample_rate: int) -> dict[str, dict[str, float]]:
    """Min / median / max of ``song_statistics`` over every song of a prepared dataset (whole songs)."""
    dataset = load_prepared(dataset_path)
    stats = []
    for split in dataset.values():
        for record in split:
            audio = load_audio(record["filename"], sample_rate, 2).samples
            stats.append(song_statistics(audio, sample_rate))
    out: dict[str, dict[str, float]] = {}
    for key in stats[0]:
        column = np.array([s[key] for s in stats])
        out[key] = {
            "min": float(column.min()),
            "median": float(np.median(column)),
            "max": float(column.max()),
        }
    return out


def spectral_distance(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference (dB) between two songs' average log-mel spectra: do two prompts differ?"""
    mean_a = log_mel_frames(a, sample_rate).mean(dim=1)
    mean_b = log_mel_frames(b, sample_rate).mean(dim=1)
    return float((mean_a - mean_b).abs().mean())


def record_tags(dataset_path: str | Path, key: str) -> list[str]:
    """The tags of the song ``key`` in a prepared dataset (its prompt at sampling)."""
    for split in load_prepared(dataset_path).values():
        for record in split:
            if record["keys"] == key:
                return [str(t) for t in record["tags"]]
    return []


def format_table(rows: Sequence[Mapping[str, float | str]], digits: int = 2) -> str:
    """Plain aligned text table (the demo's console output)."""
    columns = list(rows[0])
    cells = [[c for c in columns]] + [
        [f"{r[c]:.{digits}f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in cells)


def save_triptych(path: str | Path, rows: Sequence[tuple[str, np.ndarray]], sample_rate: int) -> Path:
    """The demo picture: one spectrogram row per (title, audio), Hz axis, one colour scale, same span."""
    from PIL import Image

    from refrain.audio.spectrogram import save_spectrogram_png

    length = min(np.shape(audio)[-1] for _, audio in rows)
    png = save_spectrogram_png(Path(path), [(t, np.asarray(a)[..., :length]) for t, a in rows], sample_rate)
    with Image.open(png) as image:  # 256 colours: a third of the size, small enough to commit
        small = image.convert("RGB").quantize(colors=256)
    small.save(png, optimize=True)
    return png
