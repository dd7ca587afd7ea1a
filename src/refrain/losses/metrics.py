"""Reconstruction metrics for VAE validation (lower is better except SI-SDR); each returns named values.

The >16 kHz band error is the one that tells whether a VAE restores what MP3 removed: MP3 encoders
low-pass around 16 kHz, so a model that merely copies its degraded input scores badly there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from auraloss.freq import MultiResolutionSTFTLoss

from refrain.losses.spectral import MelDistance


def si_sdr(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per item: (B, C, T) -> (B,), averaged over channels."""
    prediction = prediction.float() - prediction.float().mean(dim=-1, keepdim=True)
    target = target.float() - target.float().mean(dim=-1, keepdim=True)
    scale = (prediction * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    projection = scale * target
    noise = prediction - projection
    ratio = (projection.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)
    return (10.0 * torch.log10(ratio)).mean(dim=-1)


def band_energy(audio: torch.Tensor, sample_rate: int, low_hz: float, n_fft: int = 2048) -> torch.Tensor:
    """Energy per item in the band above ``low_hz`` (B, C, T) -> (B,), from a Hann-windowed STFT."""
    batch, channels, length = audio.shape
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(
        audio.float().reshape(batch * channels, length), n_fft, n_fft // 4, window=window, return_complex=True
    )
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sample_rate).to(audio.device)
    power = spec.abs().pow(2)[:, freqs >= low_hz].sum(dim=(1, 2))
    return power.reshape(batch, channels).sum(-1)


def high_band_energy_error(
    prediction: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int,
    low_hz: float = 16000.0,
    eps: float = 1e-10,
) -> torch.Tensor:
    """|10 log10 E_pred - 10 log10 E_target| in dB for the band above ``low_hz``, per item (B,)."""
    pred_energy = band_energy(prediction, sample_rate, low_hz)
    true_energy = band_energy(target, sample_rate, low_hz)
    return (10.0 * torch.log10((pred_energy + eps) / (true_energy + eps))).abs()


class ReconstructionMetrics(torch.nn.Module):
    """All validation metrics at once: ``{"mrstft", "mel", "si_sdr", "hf_energy_db"}`` (batch means)."""

    def __init__(
        self,
        sample_rate: int,
        fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128, 64, 32),
        high_band_hz: float = 16000.0,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.high_band_hz = high_band_hz
        ffts = [int(n) for n in fft_sizes]
        self.mrstft = MultiResolutionSTFTLoss(ffts, [n // 4 for n in ffts], ffts)
        self.mel = MelDistance(sample_rate)

    @torch.no_grad()
    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        prediction, target = prediction.float(), target.float()
        return {
            "mrstft": self.mrstft(prediction, target),
            "mel": self.mel(prediction, target)["mel"],
            "si_sdr": si_sdr(prediction, target).mean(),
            "hf_energy_db": high_band_energy_error(
                prediction, target, self.sample_rate, self.high_band_hz
            ).mean(),
        }
