"""soxr resampling: lengths, timing and anti-aliasing."""

from __future__ import annotations

import numpy as np
import pytest

from refrain.audio.resample import alignment_step, resample

from .signals import tone


@pytest.mark.parametrize(
    ("orig", "target", "frames", "expected"),
    [(8000, 48000, 8000, 48000), (44100, 48000, 1000, 1088), (48000, 44100, 1000, 919), (96000, 48000, 7, 4)],
)
def test_output_length_is_rounded_ratio(orig: int, target: int, frames: int, expected: int) -> None:
    out = resample(np.zeros((2, frames), np.float32), orig, target)
    assert out.shape == (2, expected) and out.dtype == np.float32


def test_tone_stays_in_time_and_amplitude() -> None:
    """A 1 kHz sine resampled 44.1 -> 48 kHz equals the same sine sampled at 48 kHz (no delay)."""
    out = resample(tone(1000, 44100, 0.5)[None], 44100, 48000)[0]
    expected = tone(1000, 48000, 0.5)
    np.testing.assert_allclose(out[1000:-1000], expected[1000:-1000], atol=1e-3)


def test_downsampling_removes_content_above_the_new_nyquist() -> None:
    out = resample(tone(20000, 48000, 0.5), 48000, 16000)
    assert out.ndim == 1 and out.shape == (8000,)
    assert np.sqrt(np.mean(out**2)) < 1e-3 * 0.5  # more than 60 dB down, not aliased to 4 kHz


def test_same_rate_is_a_copy() -> None:
    x = np.ones((2, 10), np.float32)
    out = resample(x, 48000, 48000)
    np.testing.assert_array_equal(out, x)
    assert out is not x


def test_alignment_step() -> None:
    assert alignment_step(44100, 48000) == 147 and alignment_step(8000, 48000) == 1
    with pytest.raises(ValueError):
        resample(np.zeros(4, np.float32), 0, 48000)
