"""Reference-based audio metrics for reconstruction (VAE) evaluation, one row of named figures per clip.

STOI and wide-band PESQ come from their reference implementations (``pystoi``, ``pesq``); both are speech
measures defined on mono audio at fixed rates (STOI resamples to 10 kHz itself, PESQ-WB needs 16 kHz), so
stereo music is folded to mono and resampled first, as DiffRhythm's VAE table does. The rest are computed
here on the full-band signal: mel-cepstral distortion, multi-resolution STFT distance (auraloss), SI-SDR,
log-spectral distance and the energy error above 16 kHz (the band MP3 removes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from auraloss.freq import MultiResolutionSTFTLoss

from refrain.audio.resample import resample
from refrain.audio.spectrogram import mel_filters
from refrain.losses.metrics import high_band_energy_error, si_sdr

PESQ_RATE = 16000
# Direction of "better" per metric: +1 higher is better, -1 lower is better (used by reports and compare).
HIGHER_IS_BETTER: Mapping[str, int] = {
    "stoi": 1,
    "pesq": 1,
    "si_sdr": 1,
    "mcd": -1,
    "mrstft": -1,
    "lsd": -1,
    "hf_energy_db": -1,
}
_MRSTFT_FFTS = (2048, 1024, 512, 256, 128, 64, 32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(C, T) or (T,) float audio -> (T,) float64 mono (channel mean)."""
    audio = np.asarray(audio, dtype=np.float64)
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (1 = identical; near or below 0 for unrelated audio) of ``estimate`` against ``reference``, by ``pystoi``."""
    from pystoi import stoi as _stoi

    return float(_stoi(to_mono(reference), to_mono(estimate), sample_rate, extended=False))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.04..4.64) at 16 kHz, by the ``pesq`` package (ITU-T P.862.2).

    PESQ needs speech-like activity in the reference; a silent reference gives NaN instead of an error so
    one quiet clip does not stop a table.
    """
    from pesq import NoUtterancesError, pesq

    ref = resample(to_mono(reference)[None].astype(np.float32), sample_rate, PESQ_RATE)[0]
    est = resample(to_mono(estimate)[None].astype(np.float32), sample_rate, PESQ_RATE)[0]
    if not np.abs(ref).max() > 0 or not np.abs(est).max() > 0:
        return math.nan
    try:
        return float(pesq(PESQ_RATE, ref.astype(np.float64), est.astype(np.float64), "wb"))
    except NoUtterancesError:
        return math.nan


def _power_spectrogram(audio: np.ndarray, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT|^2 of mono audio: (frames, n_fft // 2 + 1)."""
    wave = torch.from_numpy(to_mono(audio)).float()
    window = torch.hann_window(n_fft)
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True, center=True)
    return spec.abs().pow(2).T


def mel_cepstra(audio: np.ndarray, sample_rate: int, n_mels: int = 80, n_ceps: int = 25) -> torch.Tensor:
    """Mel cepstra (frames, n_ceps): orthonormal DCT-II of the natural-log mel amplitude spectrum, 25 ms / 10 ms.

    Full band: at 44.1/48 kHz the top mel bands are where MP3 cuts, so MCD here also counts that loss
    (speech papers compute it at 16-22 kHz, where the figures come out smaller)."""
    n_fft = 1 << math.ceil(math.log2(0.025 * sample_rate))
    power = _power_spectrogram(audio, n_fft, max(1, int(0.010 * sample_rate)))
    mel = power @ mel_filters(sample_rate, n_fft, n_mels).T
    log_mel = 0.5 * torch.log(mel.clamp_min(1e-10))  # log amplitude, as mel-cepstral analysis defines it
    k = torch.arange(n_mels, dtype=torch.float32)
    basis = torch.cos(
        math.pi / n_mels * (k[None, :] + 0.5) * torch.arange(n_ceps, dtype=torch.float32)[:, None]
    )
    basis[0] *= 1.0 / math.sqrt(2.0)
    return log_mel @ (basis.T * math.sqrt(2.0 / n_mels))


def mcd(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Mel-cepstral distortion in dB: mean over frames of (10 / ln 10) sqrt(2 sum_{d>=1} (c_d - c'_d)^2).

    Frames are compared in place (no time warping): a reconstruction is sample-aligned with its source.
    c0 (overall energy) is left out, as is customary.
    """
    ref, est = mel_cepstra(reference, sample_rate), mel_cepstra(estimate, sample_rate)
    frames = min(ref.shape[0], est.shape[0])
    diff = (ref[:frames, 1:] - est[:frames, 1:]).pow(2).sum(-1)
    return float((10.0 / math.log(10.0) * torch.sqrt(2.0 * diff)).mean())


def lsd(reference: np.ndarray, estimate: np.ndarray, n_fft: int = 2048) -> float:
    """Log-spectral distance in dB: per frame the RMS over bins of the dB power difference, averaged."""
    ref = 10.0 * torch.log10(_power_spectrogram(reference, n_fft, n_fft // 4).clamp_min(1e-10))
    est = 10.0 * torch.log10(_power_spectrogram(estimate, n_fft, n_fft // 4).clamp_min(1e-10))
    frames = min(ref.shape[0], est.shape[0])
    return float((ref[:frames] - est[:frames]).pow(2).mean(-1).sqrt().mean())


class ReconstructionScorer:
    """Every reconstruction metric of one clip at once: ``score(reference, estimate) -> {name: value}``."""

    def __init__(self, sample_rate: int, high_band_hz: float = 16000.0) -> None:
        self.sample_rate = sample_rate
        self.high_band_hz = high_band_hz
        self.mrstft = MultiResolutionSTFTLoss(
            list(_MRSTFT_FFTS), [n // 4 for n in _MRSTFT_FFTS], list(_MRSTFT_FFTS)
        )

    @torch.no_grad()
    def score(self, reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
        """``reference`` and ``estimate``: (C, T) float audio at ``sample_rate``, equal length."""
        ref = torch.from_numpy(np.asarray(reference, dtype=np.float32))[None]
        est = torch.from_numpy(np.asarray(estimate, dtype=np.float32))[None]
        return {
            "stoi": stoi(reference, estimate, self.sample_rate),
            "pesq": pesq_wb(reference, estimate, self.sample_rate),
            "mcd": mcd(reference, estimate, self.sample_rate),
            "mrstft": float(self.mrstft(est, ref)),
            "si_sdr": float(si_sdr(est, ref).mean()),
            "lsd": lsd(reference, estimate),
            "hf_energy_db": float(
                high_band_energy_error(est, ref, self.sample_rate, self.high_band_hz).mean()
            ),
        }
