"""Known answers for the reconstruction metrics, against their libraries and hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refrain.eval.signal_metrics import ReconstructionScorer, lsd, mcd, pesq_wb, stoi

RATE = 16000


def speechlike(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonic tone bursts with noise: enough 'activity' for STOI and PESQ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = (np.sin(2 * np.pi * 3.0 * t) > -0.2).astype(float) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    wave = 0.2 * voice * envelope + 0.005 * rng.standard_normal(t.size)
    return np.stack([wave, wave]).astype(np.float32)


def test_identical_signals_give_the_best_scores() -> None:
    clip = speechlike()
    assert stoi(clip, clip, RATE) == pytest.approx(1.0, abs=1e-6)
    assert pesq_wb(clip, clip, RATE) == pytest.approx(4.64, abs=0.01)  # P.862.2's ceiling
    assert mcd(clip, clip, RATE) == pytest.approx(0.0, abs=1e-6)
    assert lsd(clip, clip) == pytest.approx(0.0, abs=1e-6)


def test_scores_worsen_with_noise_level() -> None:
    clip = speechlike()
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(clip.shape).astype(np.float32)
    scorer = ReconstructionScorer(RATE, high_band_hz=6000.0)
    rows = [scorer.score(clip, clip + level * noise) for level in (0.003, 0.03, 0.3)]
    for better, worse in zip(rows, rows[1:], strict=False):
        assert worse["stoi"] < better["stoi"]
        assert worse["pesq"] < better["pesq"]
        assert worse["mcd"] > better["mcd"]
        assert worse["lsd"] > better["lsd"]
        assert worse["si_sdr"] < better["si_sdr"]
        assert worse["mrstft"] > better["mrstft"]


def test_si_sdr_of_a_known_mixture_matches_hand_computation() -> None:
    clip = speechlike()
    noise = np.random.default_rng(2).standard_normal(clip.shape).astype(np.float32)
    noise -= noise.mean(axis=1, keepdims=True)
    ref = clip - clip.mean(axis=1, keepdims=True)
    noise -= ((noise * ref).sum(1, keepdims=True) / (ref * ref).sum(1, keepdims=True)) * ref  # orthogonal
    noise *= np.sqrt((ref**2).sum(1, keepdims=True) / (noise**2).sum(1, keepdims=True)) / 10.0  # -20 dB
    row = ReconstructionScorer(RATE).score(clip, 0.5 * (clip + noise))  # gain does not matter
    assert row["si_sdr"] == pytest.approx(20.0, abs=0.01)


def test_silent_reference_gives_nan_pesq_not_an_error() -> None:
    silent = np.zeros((2, RATE * 2), dtype=np.float32)
    assert math.isnan(pesq_wb(silent, silent, RATE))
