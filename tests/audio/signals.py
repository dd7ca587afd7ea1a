"""Small signal helpers shared by the audio tests."""

from __future__ import annotations

import numpy as np


def tone(freq: float, sample_rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """A (frames,) float32 sine."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(signal: np.ndarray, sample_rate: int) -> float:
    """Frequency of the strongest FFT bin of a 1-D signal."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / sample_rate)[np.argmax(spectrum)])
