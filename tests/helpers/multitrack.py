"""Synthetic multitrack songs (tones, noise bursts) for the multitrack and LoRA tests, built in code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from refrain.data.multitrack import DEFAULT_STEMS

RATE = 8000
LYRICS = "[verse]\nhello night city lights\nwe are singing all the way home\n"


def write_songs(
    root: Path, count: int = 3, seconds: float = 2.0, stems: Sequence[str] = DEFAULT_STEMS
) -> Path:
    """Song folders of synthetic stems (tones, noise bursts) whose sum is the mix."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    for index in range(count):
        folder = root / f"song{index}"
        folder.mkdir(parents=True)
        parts = {
            "vocals": 0.4
            * np.sin(2 * np.pi * (300 + 40 * index) * t)
            * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)),
            "drums": 0.5 * rng.standard_normal(t.size) * (np.mod(t, 0.5) < 0.05),
            "bass": 0.5 * np.sin(2 * np.pi * (55 + 5 * index) * t),
            "other": 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 660 * t),
        }
        mix = np.zeros_like(t)
        for name in stems:
            stereo = np.stack([parts[name], 0.9 * parts[name]]).astype(np.float32)
            sf.write(folder / f"{name}.flac", stereo.T, RATE, subtype="PCM_24")
            mix = mix + parts[name]
        sf.write(folder / "mix.flac", (0.5 * np.stack([mix, 0.9 * mix])).T.astype(np.float32), RATE)
        (folder / "prompt.txt").write_text("synth pop, 120 bpm" if index % 2 else "hip hop, rap, 90 bpm")
        if index < 2:
            (folder / "lyrics.txt").write_text(LYRICS)
    return root
