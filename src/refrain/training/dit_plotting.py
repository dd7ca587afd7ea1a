"""What the DiT task writes when it listens to itself: audio, spectrograms and the lyrics it sang.

Files go to ``<run_dir>/plots/step_<6-digit step>/`` (``sample_<i>.flac``, ``reference_<i>.flac``,
``original_<i>.flac``, ``spectrograms.png`` or ``latents.png``, ``lyrics.txt``) so a run can be judged
without a logger, and the same material goes to every active logger (TensorBoard audio/image/text, the
W&B equivalents).

Per prompt the spectrogram shows three rows: the song itself (the same crop, read from the dataset's
audio file), the VAE's decode of its latent (the DiT's target) and the DiT's sample. Without the first
row a bad VAE and a bad DiT look the same: the "reference" would already sound wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from refrain.fileio import atomic_path
from refrain.sampling import Guidance, sample_guided, sigma_schedule
from refrain.training.media import Clip, TextTable, log_media


@dataclass
class PlotSample:
    """One validation prompt: its text, the sampled and the data latent, and their audio when decoded."""

    key: str
    prompt: str
    lyrics: str
    latent: Tensor  # (C, T) sampled latent, valid frames only
    reference: Tensor  # (C, T) the data latent of the same crop (posterior mean)
    audio: np.ndarray | None = None  # (channels, samples) decoded sample
    reference_audio: np.ndarray | None = None  # (channels, samples) decoded data latent
    original_audio: np.ndarray | None = None  # (channels, samples) the song's own audio of the crop


@dataclass
class PlotFiles:
    folder: Path
    image: Path
    lyrics: Path
    audio: list[Path]


def save_latent_png(path: str | Path, items: Sequence[tuple[str, Tensor]]) -> Path:
    """One row per (title, (C, T) latent) on a shared symmetric colour scale (no VAE to decode with)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arrays = [(title, latent.detach().float().cpu().numpy()) for title, latent in items]
    scale = max(float(np.abs(a).max()) for _, a in arrays) or 1.0
    fig = Figure(figsize=(10, 2.0 * len(arrays)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(arrays), 1, squeeze=False)[:, 0]
    for ax, (title, array) in zip(axes, arrays, strict=True):
        image = ax.imshow(array, origin="lower", aspect="auto", cmap="coolwarm", vmin=-scale, vmax=scale)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("channel")
        fig.colorbar(image, ax=ax, fraction=0.02)
    axes[-1].set_xlabel("latent frame")
    fig.subplots_adjust(left=0.07, right=0.97, top=0.95, bottom=0.08, hspace=0.5)
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return out


def lyrics_text(samples: Sequence[PlotSample]) -> str:
    """The prompts and lyric lines the samples were conditioned on, as readable text."""
    parts = []
    for index, sample in enumerate(samples):
        lyrics = sample.lyrics.strip() or "(instrumental / no lyric lines in this crop)"
        parts.append(f"## sample {index}: {sample.key}\nprompt: {sample.prompt}\nlyrics:\n{lyrics}\n")
    return "\n".join(parts)


def write_plot_files(folder: str | Path, samples: Sequence[PlotSample], sample_rate: int | None) -> PlotFiles:
    """Write audio (when decoded), one image and lyrics.txt for a plotting step."""
    from refrain.audio.io import save_audio
    from refrain.audio.spectrogram import save_spectrogram_png

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    audio_paths: list[Path] = []
    decoded = sample_rate is not None and all(s.audio is not None for s in samples)
    if decoded:
        rows: list[tuple[str, np.ndarray]] = []
        for index, sample in enumerate(samples):
            waves = (
                ("original", sample.original_audio, f"original {index}: the song ({sample.key})"),
                ("reference", sample.reference_audio, f"VAE decode {index}: the DiT's target"),
                ("sample", sample.audio, f"DiT sample {index}: {sample.prompt[:80]}"),
            )
            for name, wave, title in waves:
                if wave is None:
                    continue
                clean = np.nan_to_num(np.asarray(wave, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
                audio_paths.append(save_audio(out / f"{name}_{index}.flac", clean, int(sample_rate)))
                rows.append((title, clean))
        image = save_spectrogram_png(out / "spectrograms.png", rows, int(sample_rate))
    else:
        latent_rows: list[tuple[str, Tensor]] = []
        for index, sample in enumerate(samples):
            latent_rows.append((f"sample {index} latent: {sample.prompt[:80]}", sample.latent))
            latent_rows.append((f"reference {index} latent", sample.reference))
        image = save_latent_png(out / "latents.png", latent_rows)
    text_path = out / "lyrics.txt"
    text_path.write_text(lyrics_text(samples), encoding="utf-8")
    return PlotFiles(out, image, text_path, audio_paths)


def log_plot_files(
    loggers: Sequence[Logger],
    step: int,
    samples: Sequence[PlotSample],
    files: PlotFiles,
    sample_rate: int | None,
) -> None:
    """Send audio, the image and the lyrics to TensorBoard and/or W&B (other loggers get the files only)."""
    clips = [
        Clip(f"samples/audio_{index}", sample.prompt[:200], sample.audio)
        for index, sample in enumerate(samples)
        if sample.audio is not None
    ]
    lyrics = TextTable(
        "samples/lyrics",
        lyrics_text(samples),
        ["key", "prompt", "lyrics"],
        [[s.key, s.prompt, s.lyrics] for s in samples],
    )
    log_media(
        loggers,
        step,
        clips=clips,
        sample_rate=sample_rate,
        audio_key="samples/audio",
        image=(f"samples/{files.image.stem}", files.image),
        text=lyrics,
    )


class SamplePlotter:
    """Samples a batch's prompts and lyrics with given weights, decodes them, writes files and logs them.

    The VAE is loaded from the bundle on first use and kept here, outside any module, so it never enters
    the task's state dict, optimiser or checkpoints.
    """

    def __init__(
        self,
        run_dir: str | Path,
        vae_bundle: str | Path | None = None,
        num_samples: int = 2,
        num_steps: int = 30,
        solver: str = "euler",
        guidance: Guidance | None = None,
        guidance_scale: float = 15.0,
        guidance_interval: float = 0.5,
        shift: float = 3.0,
        seed: int = 0,
        dataset_path: str | Path | None = None,
        evaluator: Callable[[Sequence[PlotSample], int], dict[str, float]] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.dataset_path = str(dataset_path) if dataset_path else None
        self._audio_files: dict[str, Path] | None = None
        self.vae_bundle = str(vae_bundle) if vae_bundle else None
        self.num_samples, self.num_steps, self.solver = num_samples, num_steps, solver
        self.guidance, self.guidance_scale, self.guidance_interval = (
            guidance,
            guidance_scale,
            guidance_interval,
        )
        self.shift, self.seed = shift, seed
        self.evaluator = evaluator
        self.said_no_vae = False
        self._vae: Any = None

    def vae(self, device: torch.device) -> Any | None:
        """The bundle's OobleckVAE on ``device``, or None (said once) when no bundle is configured."""
        if not self.vae_bundle:
            if not self.said_no_vae:
                rank_zero_info("no vae_bundle configured: DiT plots show latents only (no audio)")
                self.said_no_vae = True
            return None
        if self._vae is None:
            from refrain.bundles.vae import load_vae_bundle

            self._vae = load_vae_bundle(self.vae_bundle, device=device).model
        return self._vae

    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        cond: Any,
        shape: torch.Size,
        device: torch.device,
        context: AbstractContextManager[Any] | None = None,
    ) -> Tensor:
        """Latents (B, C, T) from the same seeded noise every time, so plots compare across steps."""
        was_training = model.training
        model.eval()
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(shape, generator=generator).to(device)
        if self.guidance is not None:
            self.guidance.reset()
        with context or nullcontext():
            latents = sample_guided(
                model,
                cond,
                noise,
                sigma_schedule(self.num_steps, self.shift),
                self.solver,
                guidance=self.guidance,
                scale=self.guidance_scale,
                interval=self.guidance_interval,
                generator=generator,
            )
        model.train(was_training)
        return latents.float()

    def samples(self, latents: Tensor, batch: Mapping[str, Any], vae: Any | None) -> list[PlotSample]:
        """Per item: valid frames only, the data latent beside it, both decoded when a VAE is there."""
        out = []
        for i in range(latents.shape[0]):
            valid = batch["frame_mask"][i].bool()
            sample = PlotSample(
                key=str(_item(batch, "keys", i, f"item {i}")),
                prompt=str(_item(batch, "prompts", i, "")),
                lyrics=str(_item(batch, "lyrics_text", i, "")),
                latent=latents[i][:, valid].cpu(),
                reference=batch["latent_mean"][i][:, valid].float().cpu(),
            )
            if vae is not None:
                sample.audio = _decode(vae, sample.latent)
                sample.reference_audio = _decode(vae, sample.reference)
                start = batch.get("crop_start")
                seconds = sample.reference_audio.shape[-1] / vae.sample_rate
                offset = float(start[i]) if start is not None and i < len(start) else 0.0
                sample.original_audio = self.original(sample.key, offset, seconds, vae)
            out.append(sample)
        return out

    def original(self, key: str, offset: float, seconds: float, vae: Any) -> np.ndarray | None:
        """The crop of the song's own audio file at the VAE's rate, or None (no dataset, file gone)."""
        if not self.dataset_path:
            return None
        if self._audio_files is None:
            from refrain.data.schema import load_prepared

            self._audio_files = {}
            root = Path(self.dataset_path)
            try:
                splits = load_prepared(self.dataset_path)
                for split in splits.values():
                    for record in split.select_columns(["keys", "filename"]):
                        path = Path(record["filename"])
                        self._audio_files[str(record["keys"])] = path if path.is_absolute() else root / path
            except Exception as error:  # noqa: BLE001 - plots must never stop a run; say why once
                rank_zero_info(f"plots: no original audio ({error})")
        path = self._audio_files.get(key)
        if path is None or not path.is_file():
            return None
        from refrain.audio.io import load_audio

        loaded = load_audio(path, vae.sample_rate, int(vae.audio_channels), offset, seconds)
        return loaded.samples

    def __call__(
        self,
        model: nn.Module,
        cond: Any,
        batch: Mapping[str, Any],
        step: int,
        device: torch.device,
        loggers: Sequence[Logger] = (),
        context: AbstractContextManager[Any] | None = None,
    ) -> Path:
        """Sample, decode, write ``run_dir/plots/step_<6-digit step>`` and log; returns that folder."""
        latents = self.generate(model, cond, batch["latent_mean"].shape, device, context)
        vae = self.vae(device)
        samples = self.samples(latents, batch, vae)
        rate = vae.sample_rate if vae is not None else None
        files = write_plot_files(self.run_dir / "plots" / f"step_{step:06d}", samples, rate)
        log_plot_files(loggers, step, samples, files, rate)
        if (
            self.evaluator is not None and rate is not None
        ):  # FAD / CLAP of these samples (training.evaluation)
            figures = self.evaluator(samples, rate)
            for logger in loggers:
                logger.log_metrics(figures, step=step)
        return files.folder


def _item(batch: Mapping[str, Any], key: str, index: int, default: str) -> Any:
    values = batch.get(key)
    return values[index] if values is not None and index < len(values) else default


def _decode(vae: Any, latent: Tensor) -> np.ndarray:
    """(C, T) latent -> (channels, samples) float32 numpy audio through the chunked decoder."""
    device = next(vae.parameters()).device
    audio = vae.decode_chunked(latent[None].to(device), output_device="cpu")
    return audio[0].float().numpy()
