"""The demo's time-structure figures tell a reconstruction that follows a song from its average spectrum."""

from __future__ import annotations

import numpy as np
import pytest

from refrain.eval.demo_figures import format_table, mean_row, spectral_distance, time_structure

RATE = 16000


def _song(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """Stereo noise whose level and brightness change every 0.5 s (a 'song' with time structure)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = rng.standard_normal(n)
    t = np.arange(n) / RATE
    bright = np.sign(np.sin(2 * np.pi * t)) > 0  # alternates every 0.5 s
    smooth = np.convolve(noise, np.ones(16) / 16, mode="same")
    level = 0.05 + 0.25 * (np.floor(t * 2) % 3) / 2
    mono = level * np.where(bright, noise, smooth)
    return np.stack([mono, mono]).astype(np.float32)


def _average_spectrum_copy(song: np.ndarray) -> np.ndarray:
    """What the old demo VAE decoded: the song's average spectrum at a constant level (random phases)."""
    spectrum = np.abs(np.fft.rfft(song[0]))
    rng = np.random.default_rng(1)
    flat = np.fft.irfft(spectrum * np.exp(2j * np.pi * rng.random(spectrum.size)), n=song.shape[-1])
    return np.stack([flat, flat]).astype(np.float32)


def test_a_copy_scores_one_and_the_average_spectrum_scores_near_zero() -> None:
    song = _song()
    same = time_structure(song, song.copy(), RATE)
    assert same["logmel_corr"] == pytest.approx(1.0, abs=1e-6)
    assert same["loudness_std_ratio"] == pytest.approx(1.0, abs=1e-6)
    flat = time_structure(song, _average_spectrum_copy(song), RATE)
    assert abs(flat["logmel_corr"]) < 0.3 and flat["loudness_std_ratio"] < 0.3


def test_a_noisy_but_faithful_copy_keeps_the_time_structure() -> None:
    song = _song()
    rng = np.random.default_rng(2)
    noisy = song + 0.02 * rng.standard_normal(song.shape).astype(np.float32)
    figures = time_structure(song, noisy, RATE)
    assert figures["logmel_corr"] > 0.8 and figures["loudness_std_ratio"] > 0.5


def test_spectral_distance_separates_different_songs() -> None:
    song = _song()
    assert spectral_distance(song, song, RATE) == 0.0
    assert spectral_distance(song, 0.1 * song, RATE) == pytest.approx(20.0, abs=0.5)  # 10x quieter = 20 dB


def test_table_has_a_mean_row() -> None:
    rows = [{"song": "a", "x": 1.0}, {"song": "b", "x": 3.0}]
    text = format_table([*rows, mean_row(rows)])
    assert text.splitlines()[-1].split() == ["mean", "2.00"]
