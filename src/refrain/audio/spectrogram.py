"""Log-mel spectrograms (torch, differentiable) and the PNG rows every run writes next to its checkpoints."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from refrain.fileio import atomic_path

_DB_FLOOR = 1e-10  # power floor before log10: -100 dB, far below 16-bit quantisation noise
_DB_RANGE = 80.0  # dynamic range shown in PNGs
_PNG_HOP = 512


@lru_cache(maxsize=32)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, device: str = "cpu") -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-scale, Slaney-normalised filters (librosa's defaults), cached."""
    from transformers.audio_utils import mel_filter_bank  # imported here: transformers loads slowly

    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=sample_rate / 2,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.ascontiguousarray(bank.T, dtype=np.float32)).to(device)


def mel_spectrogram(
    audio: torch.Tensor,
    sample_rate: int,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    log: bool = True,
) -> torch.Tensor:
    """(..., T) waveform -> (..., n_mels, frames) mel power spectrogram; in dB (10 log10) when `log`.

    Hann window, centred frames (zero-padded, so clips shorter than the window work too). Computed
    in float32 and differentiable, so losses can use it as well as plots.
    """
    if audio.shape[-1] == 0:
        raise ValueError("mel_spectrogram got an empty waveform")
    lead = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1]).float()
    window = torch.hann_window(n_fft, device=flat.device, dtype=flat.dtype)
    spec = torch.stft(
        flat,
        n_fft,
        hop_length=hop_length,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    mel = torch.matmul(mel_filters(sample_rate, n_fft, n_mels, str(flat.device)), power)
    if log:
        mel = 10.0 * torch.log10(mel.clamp_min(_DB_FLOOR))
    return mel.reshape(*lead, n_mels, mel.shape[-1])


def save_spectrogram_png(
    path: str | os.PathLike, items: list[tuple[str, np.ndarray | torch.Tensor]], sample_rate: int
) -> Path:
    """Write one log-mel row per (title, waveform) item, all on one colour scale, as a PNG.

    Waveforms may be (T,), (C, T) or (1, C, T); channels are averaged for display. The file is
    written to a temporary name and moved into place, so a viewer never sees half a PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not items:
        raise ValueError("save_spectrogram_png needs at least one (title, waveform) item")
    mels = [(title, _display_mel(wave, sample_rate)) for title, wave in items]
    top = max(float(mel.max()) for _, mel in mels)
    fig = Figure(figsize=(10, 2.4 * len(mels)))  # fixed margins: constrained layout doubles render time
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(mels), 1, squeeze=False)[:, 0]
    for ax, (title, mel) in zip(axes, mels, strict=True):
        seconds = mel.shape[1] * _PNG_HOP / sample_rate
        image = ax.imshow(
            mel,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - _DB_RANGE,
            vmax=top,
            extent=(0.0, seconds, 0, mel.shape[0]),
        )
        ax.set_title(title, fontsize=10)
        label_hz(ax, sample_rate, mel.shape[0])
        fig.colorbar(image, ax=ax, label="dB")
    axes[-1].set_xlabel("seconds")
    fig.subplots_adjust(
        left=0.07, right=1.0, bottom=0.5 / (2.4 * len(mels)), top=1 - 0.35 / (2.4 * len(mels)), hspace=0.5
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


HZ_TICKS = (100, 500, 1000, 2000, 4000, 8000, 16000)  # low ticks sparse: mel rows crowd there


def mel_bin_of(frequencies: np.ndarray, sample_rate: int, n_mels: int) -> np.ndarray:
    """Where each frequency sits on the row axis of a ``mel_spectrogram`` image (fractional bin index).

    Filter i of the Slaney bank is centred at mel point i + 1 of n_mels + 2 equally spaced points over
    0..sample_rate / 2, so a frequency's row is its mel position in those steps, minus one.
    """
    from transformers.audio_utils import hertz_to_mel

    top = float(hertz_to_mel(np.array([sample_rate / 2]), mel_scale="slaney")[0])
    mels = hertz_to_mel(np.asarray(frequencies, dtype=np.float64), mel_scale="slaney")
    return mels / top * (n_mels + 1) - 1


def label_hz(ax: object, sample_rate: int, n_mels: int) -> None:
    """Label a mel image's rows in Hz (the bins themselves mean nothing to a listener)."""
    ticks = np.array([f for f in HZ_TICKS if f < sample_rate / 2], dtype=np.float64)
    rows = mel_bin_of(ticks, sample_rate, n_mels) + 0.5  # imshow's extent puts bin i at i..i+1
    ax.set_yticks(rows, [f"{f / 1000:g}k" if f >= 1000 else f"{f:g}" for f in ticks])  # type: ignore[attr-defined]
    ax.set_ylabel("Hz")  # type: ignore[attr-defined]


def _display_mel(wave: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Channel-averaged log-mel (n_mels, frames) of one waveform, as numpy for matplotlib."""
    tensor = torch.as_tensor(wave).detach().float().cpu()
    while tensor.ndim > 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim == 2:
        tensor = tensor.mean(dim=0)
    if tensor.ndim != 1:
        raise ValueError(f"expected a waveform shaped (T,), (C, T) or (1, C, T), got {tuple(wave.shape)}")
    return mel_spectrogram(tensor, sample_rate, hop_length=_PNG_HOP).numpy()
