"""Simple music statistics of a song, to compare a generated set with a reference set at a glance.

Integrated loudness comes from ``pyloudnorm`` (ITU-R BS.1770-4). Its variation over time (the standard
deviation of 400 ms momentary loudness, in dB) and the spectral centroid's relative variation tell a
song that evolves from a steady noise band, which the demo issue measured with the same two figures.
"""

from __future__ import annotations

import numpy as np
import torch


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """LUFS of (C, T) audio; -inf-like silence is reported as -70 (the BS.1770 absolute gate)."""
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)
    data = np.asarray(audio, dtype=np.float64).T
    if data.shape[0] < int(0.4 * sample_rate):
        data = np.pad(data, ((0, int(0.4 * sample_rate) - data.shape[0]), (0, 0)))
    value = float(meter.integrated_loudness(data))
    return max(value, -70.0) if np.isfinite(value) else -70.0


def loudness_curve(audio: np.ndarray, sample_rate: int, window: float = 0.4, hop: float = 0.1) -> np.ndarray:
    """Momentary loudness proxy in dB (mean-square energy of the mono mix per window), one value per hop."""
    mono = np.asarray(audio, dtype=np.float64).mean(axis=0) if np.ndim(audio) == 2 else np.asarray(audio)
    size, step = int(window * sample_rate), max(1, int(hop * sample_rate))
    if mono.size < size:
        return np.array([10.0 * np.log10(np.mean(mono**2) + 1e-10)])
    frames = np.lib.stride_tricks.sliding_window_view(mono, size)[::step]
    return 10.0 * np.log10((frames**2).mean(axis=1) + 1e-10)


def spectral_centroid(audio: np.ndarray, sample_rate: int, n_fft: int = 2048, hop: float = 0.1) -> np.ndarray:
    """Spectral centroid in Hz per frame of the mono mix (frames with no energy are dropped)."""
    mono = torch.from_numpy(np.asarray(audio, dtype=np.float32).reshape(-1, np.shape(audio)[-1]).mean(axis=0))
    spec = torch.stft(
        mono, n_fft, max(1, int(hop * sample_rate)), window=torch.hann_window(n_fft), return_complex=True
    )
    power = spec.abs().pow(2)
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate)[:, None]
    energy = power.sum(0)
    keep = energy > 1e-10
    return ((freqs * power).sum(0)[keep] / energy[keep]).numpy()


def song_statistics(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Loudness (LUFS), its variation over time (dB), the spectral centroid (Hz) and its relative variation."""
    curve = loudness_curve(audio, sample_rate)
    active = curve[curve > curve.max() - 60.0] if curve.size else curve
    centroid = spectral_centroid(audio, sample_rate)
    mean_centroid = float(centroid.mean()) if centroid.size else 0.0
    return {
        "loudness_lufs": integrated_loudness(audio, sample_rate),
        "loudness_std_db": float(active.std()) if active.size else 0.0,
        "centroid_hz": mean_centroid,
        "centroid_variation": float(centroid.std() / mean_centroid) if mean_centroid > 0 else 0.0,
    }
