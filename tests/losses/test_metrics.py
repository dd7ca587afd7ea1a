"""Validation metrics: SI-SDR, the >16 kHz band energy error, and the combined metric set."""

from __future__ import annotations

import pytest
import torch

from refrain.losses.metrics import ReconstructionMetrics, band_energy, high_band_energy_error, si_sdr

RATE = 44100


def broadband(seed: int = 0, frames: int = 16384) -> torch.Tensor:
    return 0.1 * torch.randn(1, 2, frames, generator=torch.Generator().manual_seed(seed))


def lowpass(audio: torch.Tensor, cutoff: float) -> torch.Tensor:
    spectrum = torch.fft.rfft(audio)
    spectrum[..., torch.fft.rfftfreq(audio.shape[-1], 1 / RATE) > cutoff] = 0
    return torch.fft.irfft(spectrum, n=audio.shape[-1])


def test_si_sdr_is_scale_invariant_and_known_for_added_noise() -> None:
    target = broadband()
    assert si_sdr(3.0 * target, target).item() > 60
    noise = broadband(seed=1)
    noise = noise - (noise * target).sum(-1, keepdim=True) / target.pow(2).sum(-1, keepdim=True) * target
    scaled = noise * (target.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)) * 0.1
    assert si_sdr(target + scaled, target).item() == pytest.approx(20.0, abs=0.05)  # noise at -20 dB


def test_high_band_error_sees_what_mp3_removes() -> None:
    target = broadband()
    assert high_band_energy_error(target, target, RATE).item() == pytest.approx(0.0, abs=1e-5)
    muffled = lowpass(target, 16000)
    assert band_energy(muffled, RATE, 16500).item() < 1e-3 * band_energy(target, RATE, 16500).item()
    assert high_band_energy_error(muffled, target, RATE).item() > 3.0
    assert high_band_energy_error(0.5 * target, target, RATE).item() == pytest.approx(6.02, abs=0.05)


def test_metric_set_is_named_and_ordered() -> None:
    metrics = ReconstructionMetrics(RATE, fft_sizes=(1024, 256))
    target = broadband()
    good = metrics(target + 0.001 * broadband(seed=2), target)
    bad = metrics(lowpass(target, 8000), target)
    assert set(good) == {"mrstft", "mel", "si_sdr", "hf_energy_db"}
    assert good["mrstft"] < bad["mrstft"] and good["mel"] < bad["mel"]
    assert good["si_sdr"] > bad["si_sdr"] and good["hf_energy_db"] < bad["hf_energy_db"]
