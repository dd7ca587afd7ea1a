"""MP3 degradation: exact length and alignment, the band LAME removes, and the degrader's draws."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from refrain.audio.mp3 import (
    ENCODER_DELAY,
    Mp3Degrader,
    Mp3Setting,
    codec_sample_rate,
    encode_mp3,
    mp3_roundtrip,
)
from refrain.errors import RefrainInputError

SR = 48000
CBR128 = Mp3Setting(bitrate_kbps=128)


def _noise(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((channels, frames)) * 0.1).astype(np.float32)


def _harmonics(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    x = sum(0.1 / k * np.sin(2 * np.pi * 220 * k * t + k) for k in range(1, 12))
    return np.stack([x, np.roll(x, 100)]).astype(np.float32)


def _lag(reference: np.ndarray, signal: np.ndarray, max_lag: int = 2000) -> int:
    """Shift (in samples) of `signal` relative to `reference` by cross-correlation over +-max_lag."""
    n = reference.size + signal.size
    corr = np.fft.irfft(np.conj(np.fft.rfft(reference, n)) * np.fft.rfft(signal, n), n)
    window = np.concatenate([corr[-max_lag:], corr[: max_lag + 1]])
    return int(np.argmax(window)) - max_lag


def _snr_db(clean: np.ndarray, degraded: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(clean**2) / np.sum((clean - degraded) ** 2)))


@pytest.mark.parametrize(
    "setting", [Mp3Setting(bitrate_kbps=64), CBR128, Mp3Setting(bitrate_kbps=320), Mp3Setting(vbr_quality=0)]
)
@pytest.mark.parametrize(("rate", "frames"), [(48000, 48000), (44100, 30011), (96000, 50001), (40000, 7)])
def test_roundtrip_keeps_exact_shape_and_zero_lag(setting: Mp3Setting, rate: int, frames: int) -> None:
    x = _noise(frames)
    y = mp3_roundtrip(x, rate, setting)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y).max() <= 1.0
    if frames > 4000:
        assert _lag(x[0], y[0]) == 0 and _lag(x[1], y[1]) == 0


@pytest.mark.parametrize("setting", [Mp3Setting(vbr_quality=q) for q in (0, 4, 7)])
def test_vbr_decodes_the_whole_clip(setting: Mp3Setting) -> None:
    """Without the Xing frame libsndfile stopped at mpg123's length estimate (1.4 s of a 3 s clip)."""
    x = _harmonics(3.0)
    data = encode_mp3(x, SR, setting)
    assert data[36:40] == b"Xing"
    assert sf.info(io.BytesIO(data)).frames >= x.shape[1] + ENCODER_DELAY
    tail = mp3_roundtrip(x, SR, setting)[:, -SR // 2 :]
    assert _snr_db(x[:, -SR // 2 :], tail) > 15


def test_mono_one_dimensional_input_roundtrips() -> None:
    x = _noise(20000, channels=1)[0]
    y = mp3_roundtrip(x, SR, CBR128)
    assert y.shape == x.shape and _lag(x, y) == 0


def test_128k_removes_the_band_above_lames_lowpass_and_keeps_the_rest() -> None:
    x = _noise(2 * SR)
    y = mp3_roundtrip(x, SR, CBR128)
    freqs = np.fft.rfftfreq(x.shape[1], 1 / SR)
    power_in, power_out = (np.abs(np.fft.rfft(a, axis=1)) ** 2 for a in (x, y))
    high, low = freqs >= 18000, freqs < 15000
    high_drop_db = 10 * np.log10(power_in[:, high].sum() / power_out[:, high].sum())
    low_change_db = 10 * np.log10(power_out[:, low].sum() / power_in[:, low].sum())
    assert high_drop_db > 40  # measured 50-64 dB over seeds
    assert abs(low_change_db) < 1.0  # measured 0.1 dB


def test_quality_orders_as_expected_on_a_tonal_signal() -> None:
    x = _harmonics(1.0)
    snr = {
        str(s): _snr_db(x, mp3_roundtrip(x, SR, s)) for s in (CBR128, Mp3Setting(320), Mp3Setting(None, 0))
    }
    assert snr["cbr128"] > 20  # measured 26 dB
    assert snr["cbr320"] > 45 and snr["vbr0"] > 40  # measured 60 and 51 dB


def test_codec_rates() -> None:
    assert [codec_sample_rate(r) for r in (48000, 44100, 96000, 40000, 100)] == [
        48000,
        44100,
        48000,
        44100,
        8000,
    ]


@pytest.mark.parametrize(
    "kwargs", [{}, {"bitrate_kbps": 128, "vbr_quality": 2}, {"bitrate_kbps": 100}, {"vbr_quality": 10}]
)
def test_invalid_settings_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Mp3Setting(**kwargs)


def test_more_than_two_channels_is_a_clear_error() -> None:
    with pytest.raises(RefrainInputError, match=r"mp3_roundtrip: samples shaped \(3, 100\)"):
        mp3_roundtrip(np.zeros((3, 100), np.float32), SR, CBR128)


def test_degrader_clean_probability_one_returns_input_unchanged() -> None:
    degrader = Mp3Degrader(SR, clean_probability=1.0)
    x = _noise(4800)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out, setting = degrader(x, rng)
        assert setting is None and out is x


def test_degrader_clean_probability_zero_always_degrades() -> None:
    degrader = Mp3Degrader(SR, clean_probability=0.0)
    x = _noise(4800)
    rng = np.random.default_rng(0)
    for _ in range(12):
        out, setting = degrader(x, rng)
        assert setting in degrader.settings
        assert out.shape == x.shape and not np.array_equal(out, x)


def test_degrader_is_reproducible_and_draws_the_configured_mix() -> None:
    degrader = Mp3Degrader(SR, cbr_bitrates=(64, 320), vbr_qualities=(0, 7), clean_probability=1 / 3)
    x = _noise(2400)
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(123)
        runs.append([degrader(x, rng) for _ in range(8)])
    for (a, sa), (b, sb) in zip(*runs, strict=True):
        assert sa == sb
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(7)
    draws = [degrader(x[:, :64], rng)[1] for _ in range(300)]
    assert sum(d is None for d in draws) / len(draws) == pytest.approx(1 / 3, abs=0.1)
    assert {str(d) for d in draws if d is not None} == {"cbr64", "cbr320", "vbr0", "vbr7"}


def test_degrader_without_settings_must_stay_clean() -> None:
    with pytest.raises(ValueError, match="clean_probability must be 1"):
        Mp3Degrader(SR, cbr_bitrates=(), vbr_qualities=(), clean_probability=0.5)
    assert Mp3Degrader(SR, cbr_bitrates=(), vbr_qualities=(), clean_probability=1.0).settings == []
