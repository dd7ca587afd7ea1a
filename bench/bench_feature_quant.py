"""How much 8-bit storage changes teacher features: reconstruction error of the candidate schemes.

Features of real songs (the embedded corpus) from random-weight HuBERT models of MERT-v1-330M's and
mHuBERT-147's width and input rate (1024-d at 24 kHz with MERT's per-chunk normalisation, 768-d at
16 kHz), average-pooled to Stable Audio Open's latent rate as ``--teacher_rate latent`` stores them.
Random weights give real time structure but not a trained model's few huge channels, so MERT's are
added: four channels offset by +-300..600 (above float8 e4m3's 448) with transients on top.

Errors that matter to REPA (mean over frames of 1 - cos between the stored and the exact feature, as
the loss compares them) and to the ordinary channels (RMS error of all channels but the four, relative
to their RMS), for bf16 (today's compact form), a bare float8 e4m3 cast, and int8 with one scale per
tensor, per frame, per channel (whole song) and per channel per block of frames.

    python bench/bench_feature_quant.py [--tracks 4] [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from refrain.audio.io import load_audio
from refrain.data.conditioning_encoder import pool_to_frames
from refrain.data.embedded import embedded_tracks_dir
from refrain.data.feature_quant import QMAX, dequantize_rows, quantize_int8
from refrain.models.teachers import TeacherSpec, create_random_hubert, load_teachers

LATENT_RATE = 44100 / 2048  # Stable Audio Open
OUTLIERS = {17: 520.0, 300: -610.0, 611: 310.0, 940: -450.0}  # channel: offset (MERT-like)


def features(tracks: int, seconds: float, root: Path) -> dict[str, list[Tensor]]:
    """(frames, dim) pooled features per teacher and song, over the first ``seconds`` of ``tracks`` songs."""
    labels = {"mert": "MERT-shaped (1024-d)", "mhubert": "mHuBERT-shaped (768-d)"}
    create_random_hubert(root / "mert", hidden_size=1024, num_layers=2, conv_channels=64, seed=1)
    create_random_hubert(root / "mhubert", hidden_size=768, num_layers=2, conv_channels=64, seed=2)
    specs = {
        "mert": TeacherSpec("mert", str(root / "mert"), 24000, chunk_seconds=5.0, normalize=True),
        "mhubert": TeacherSpec("mhubert", str(root / "mhubert"), 16000, chunk_seconds=30.0),
    }
    teachers = {labels[name]: teacher for name, teacher in load_teachers(specs).items()}
    songs = sorted(embedded_tracks_dir().glob("*/*.opus"))[:: max(1, 28 // tracks)][:tracks]
    out: dict[str, list[Tensor]] = {label: [] for label in teachers}
    for path in songs:
        audio = torch.from_numpy(load_audio(str(path), sample_rate=44100, channels=1).samples)
        audio = audio[:, : int(seconds * 44100)]
        frames = round(audio.shape[-1] / 2048)
        with torch.no_grad():
            for label, teacher in teachers.items():
                out[label].append(pool_to_frames(teacher(audio[None], 44100)[0], frames))
    torch.manual_seed(0)
    for mert in out["MERT-shaped (1024-d)"]:
        for channel, offset in OUTLIERS.items():  # a large offset plus transients of up to a third of it
            mert[:, channel] += offset * (1.0 + 0.33 * torch.randn(mert.shape[0]).clamp(-3, 3) / 3)
    return out


def int8_with(scale_of: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """A symmetric int8 round trip whose scale has a shape broadcastable to x (per tensor/frame/channel)."""

    def roundtrip(x: Tensor) -> Tensor:
        scale = scale_of(x.abs()) / QMAX
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.round(x / scale).clamp(-QMAX, QMAX) * scale

    return roundtrip


def blocked(block: int) -> Callable[[Tensor], Tensor]:
    def roundtrip(x: Tensor) -> Tensor:
        codes, scale = quantize_int8(x, block)
        return dequantize_rows(codes, scale, 0, block)

    return roundtrip


SCHEMES: dict[str, tuple[Callable[[Tensor], Tensor], float]] = {  # round trip, bytes per value
    "bfloat16 (today's compact)": (lambda x: x.bfloat16().float(), 2.0),
    "float8 e4m3, bare cast": (lambda x: x.to(torch.float8_e4m3fn).float(), 1.0),
    "int8, one scale per tensor": (int8_with(lambda a: a.amax()), 1.0),
    "int8, one scale per frame": (int8_with(lambda a: a.amax(dim=1, keepdim=True)), 1.0),
    "int8, per channel (whole song)": (int8_with(lambda a: a.amax(dim=0, keepdim=True)), 1.0),
    "int8, per channel, blocks of 256 frames": (blocked(256), 1.0 + 4 / 256),
    "int8, per channel, blocks of 64 frames": (blocked(64), 1.0 + 4 / 64),
    "int8, per channel, blocks of 16 frames": (blocked(16), 1.0 + 4 / 16),
}


def errors(x: Tensor, y: Tensor) -> tuple[float, float, float]:
    """(mean 1 - cos per frame, max 1 - cos, relative RMS error of the ordinary channels)."""
    if not bool(torch.isfinite(y).all()):
        return float("nan"), float("nan"), float("nan")
    distance = 1.0 - torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=1)
    keep = torch.ones(x.shape[1], dtype=torch.bool)
    if x.shape[1] == 1024:  # the MERT-shaped features: leave out the added channels
        keep[list(OUTLIERS)] = False
    ordinary = (x - y)[:, keep].double().pow(2).mean().sqrt() / x[:, keep].double().pow(2).mean().sqrt()
    return float(distance.mean()), float(distance.max()), float(ordinary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=4, help="embedded songs (of 28)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of each song")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        feats = features(args.tracks, args.seconds, Path(tmp))
    for label, songs in feats.items():
        x = torch.cat(songs)
        print(
            f"{label}: {len(songs)} songs, {x.shape[0]} frames at {LATENT_RATE:.2f}/s; max |x| {x.abs().max():.1f}; "
            f"RMS {x.pow(2).mean().sqrt():.3f}"
        )
    print(
        "\n| scheme | bytes/value | "
        + " | ".join(f"{label}: mean 1-cos | max 1-cos | ordinary-channel rel. RMS err" for label in feats)
        + " |"
    )
    print("|---|---|" + "---|---|---|" * len(feats))
    for name, (roundtrip, size) in SCHEMES.items():
        cells = []
        for songs in feats.values():  # each song stored as its own entry, as the cache does
            back = torch.cat([roundtrip(x) for x in songs])
            cells += [f"{value:.2e}" for value in errors(torch.cat(songs), back)]
        print(f"| {name} | {size:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
