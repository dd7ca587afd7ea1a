"""Log-mel spectrograms and the PNG every run writes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from refrain.audio.spectrogram import mel_filters, mel_spectrogram, save_spectrogram_png

from .signals import tone

SR = 48000


def _slaney_hz_to_mel(hz: float) -> float:
    """Slaney's mel scale, written out here independently of transformers."""
    return 3 * hz / 200 if hz < 1000 else 15 + 27 * math.log(hz / 1000) / math.log(6.4)


@pytest.mark.parametrize("freq", [440.0, 2500.0, 9000.0])
def test_pure_tone_peaks_in_its_mel_bin(freq: float) -> None:
    mel = mel_spectrogram(torch.from_numpy(tone(freq, SR, 1.0)), SR)
    assert mel.shape == (128, 1 + SR // 512)
    edges = np.linspace(0, _slaney_hz_to_mel(SR / 2), 128 + 2)
    expected = int(np.argmin(np.abs(edges[1:-1] - _slaney_hz_to_mel(freq))))
    assert int(mel.mean(dim=-1).argmax()) in (expected - 1, expected, expected + 1)
    assert int(mel.mean(dim=-1).argmax()) == int(
        mel_filters(SR, 2048, 128)[:, round(freq * 2048 / SR)].argmax()
    )


def test_batch_shapes_power_and_db() -> None:
    audio = torch.randn(2, 3, 4096) * 0.1
    power = mel_spectrogram(audio, SR, log=False)
    db = mel_spectrogram(audio, SR)
    assert power.shape == db.shape == (2, 3, 128, 9)
    assert (power >= 0).all()
    torch.testing.assert_close(db, 10 * torch.log10(power.clamp_min(1e-10)))
    short = mel_spectrogram(torch.zeros(100), SR)  # shorter than the window: zero-padded, floor in dB
    assert short.shape == (128, 1) and float(short.max()) == pytest.approx(-100.0)


def test_gradient_flows_and_filters_are_cached() -> None:
    audio = torch.randn(2048, requires_grad=True)
    mel_spectrogram(audio, SR).mean().backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all()
    assert mel_filters(SR, 2048, 128) is mel_filters(SR, 2048, 128)


def test_png_is_written_with_one_row_per_item(tmp_path: Path) -> None:
    from matplotlib.image import imread

    target = np.stack([tone(440, SR, 1.0)] * 2)
    items = [
        ("target", target),
        ("reconstruction", torch.from_numpy(target)[None] * 0.5),
        ("mono", target[0]),
    ]
    path = save_spectrogram_png(tmp_path / "plots" / "step_10.png", items, SR)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] == 3 * 240 and image.shape[1] == 1000
    assert [p.name for p in path.parent.iterdir()] == ["step_10.png"]
    one_row = imread(save_spectrogram_png(tmp_path / "one.png", items[:1], SR))
    assert one_row.shape[0] == 240 and not np.allclose(image[:240], image[:240].mean())


def test_png_needs_items() -> None:
    with pytest.raises(ValueError, match="at least one"):
        save_spectrogram_png("unused.png", [], SR)
