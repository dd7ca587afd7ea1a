"""What the VAE task listens to at a plot step: seconds of a real song, not the training crop.

A training crop is what fits a batch (16384 samples, 0.37 s, in the demo recipe): too short to hear a
reconstruction or to see anything but a smear in a spectrogram. The plot uses the first ``seconds`` of
the first validation song instead, clean and through the validation MP3 setting, and reconstructs it
from the MP3 (the task's job), with the chunked codec so a long excerpt fits in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

PLOT_SECONDS = 10.0


def listening_clip(
    datamodule: Any, sample_rate: int, channels: int, hop: int, seconds: float = PLOT_SECONDS
) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """(clean, degraded, setting) of the first validation song's first ``seconds``, hop-aligned; None when
    the datamodule has no validation items (the caller then plots the training crop)."""
    from refrain.audio.io import load_audio
    from refrain.audio.mp3 import mp3_roundtrip

    items = getattr(getattr(datamodule, "val_set", None), "items", None)
    setting = getattr(datamodule, "val_setting", None)
    if not items or setting is None:
        return None
    name, duration = items[0]
    clean = load_audio(name, sample_rate, channels, 0.0, min(float(duration), seconds)).samples
    usable = clean.shape[-1] // hop * hop
    if usable == 0:
        return None
    clean = clean[:, :usable]
    degraded = mp3_roundtrip(clean, sample_rate, setting)
    return torch.from_numpy(clean), torch.from_numpy(degraded), str(setting)


@torch.no_grad()
def reconstruct(vae: Any, degraded: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The VAE's reconstruction of a (channels, samples) clip through its chunked encoder and decoder."""
    posterior = vae.encode_chunked(degraded[None], output_device=device)
    audio = vae.decode_chunked(posterior.mode(), length=degraded.shape[-1], output_device="cpu")
    return audio[0].float()


class VAEPlotter:
    """Every ``every_n_steps`` steps: wavs and a spectrogram triple (lossless input, its MP3, the
    reconstruction) in ``run_dir/plots/step_<6-digit step>``, and the same to every active logger."""

    def __init__(self, run_dir: str | Path = "exps/vae", every_n_steps: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.every_n_steps = int(every_n_steps or 0)

    def due(self, step: int) -> bool:
        return bool(self.every_n_steps) and step % self.every_n_steps == 0

    def __call__(
        self,
        step: int,
        waves: Mapping[str, torch.Tensor],
        setting: str,
        sample_rate: int,
        loggers: Sequence[Any],
    ) -> Path:
        from refrain.audio.io import save_audio
        from refrain.audio.spectrogram import save_spectrogram_png
        from refrain.training.media import Clip, log_media

        folder = self.run_dir / "plots" / f"step_{step:06d}"
        arrays = {name: wave.detach().float().cpu().numpy() for name, wave in waves.items()}
        for name, array in arrays.items():
            save_audio(folder / f"{name}.wav", array, sample_rate)
        titles = {
            "input": "input (lossless target)",
            "degraded": f"degraded ({setting})",
            "reconstruction": "reconstruction",
        }
        rows = [(titles.get(name, name), array) for name, array in arrays.items()]
        png = save_spectrogram_png(folder / "spectrograms.png", rows, sample_rate)
        clips = [Clip(f"audio/{name}", name, array) for name, array in arrays.items()]
        log_media(loggers, step, clips=clips, sample_rate=sample_rate, image=("spectrograms", png))
        return folder
