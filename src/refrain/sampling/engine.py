"""The parts every sampling mode shares: conditioning, seeded noise, VAE encode/decode, results.

``Pipeline`` (refrain.sampling.pipeline) builds its modes from these; they live apart so the modes
read as the few lines of latent math each one is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from refrain.audio.io import load_audio
from refrain.errors import RefrainInputError
from refrain.models.backbone import backbone_of, draw_noise, require, spec_of
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.vae.oobleck import OobleckVAE
from refrain.sampling.lyrics_prep import LyricsPreparer, TimedLyrics
from refrain.sampling.options import SamplerOptions
from refrain.sampling.sidecar import array_identity, file_identity, new_sidecar, resolve_identity
from refrain.sampling.solvers import StepCallback
from refrain.sampling.song import LyricsLayout, SongResult
from refrain.text.vocab import PhonemeVocab

Progress = Callable[[str, int, int], None]
"""progress(mode, steps_done, steps_total): the CLI's progress bar hooks in here."""
Source = str | Path | np.ndarray | Mapping[str, Any]
"""A source song: an audio file, a (channels, samples) array at the VAE rate, or a sidecar's file identity."""


class SamplingEngine:
    """A DiT, its VAE, the phoneme vocabulary and the text encoder (or a factory that loads it on first use)."""

    def __init__(
        self,
        model: nn.Module,
        vae: OobleckVAE,
        vocab: PhonemeVocab,
        text_encoder: Callable[[], Any] | nn.Module,
        bundle_hash: str = "",
        bundle_path: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model
        self.vae = vae
        self.lyrics = LyricsPreparer(vocab)
        self._text_encoder = text_encoder
        self.bundle_hash = bundle_hash
        self.bundle_path = str(Path(bundle_path).resolve()) if bundle_path is not None else None
        self.device = torch.device(device)
        self.progress: Progress | None = None
        self.adapters: object | None = None
        self._styles: dict[str, tuple[Tensor, Tensor]] = {}

    def use_adapters(self, model: nn.Module, identity: str, adapters: object) -> None:
        """The one way to change the model of a loaded pipeline (``refrain.lora.sampling.apply_adapters``).

        ``model`` replaces the DiT, ``identity`` becomes the model hash every sidecar records (so a song
        names base + adapters + scales), ``adapters`` is kept as ``self.adapters``. Once only: adapters
        stack in one load, not across calls.
        """
        if self.adapters is not None:
            raise RefrainInputError(
                "--lora", "this pipeline already carries adapters", "load all adapters in one call"
            )
        self.model, self.bundle_hash, self.adapters = model, identity, adapters

    @property
    def sample_rate(self) -> int:
        return self.vae.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.vae.frame_rate

    @property
    def latent_channels(self) -> int:
        return self.vae.latent_channels

    def frames_for(self, seconds: float) -> int:
        if not seconds > 0:
            raise RefrainInputError(
                "duration", f"{seconds} s is not positive", "ask for a positive number of seconds"
            )
        return max(
            1, math.ceil(seconds * self.frame_rate - 1e-6)
        )  # enough frames to cover every second asked

    def timed_lyrics(self, text: str, duration: float, layout: LyricsLayout) -> TimedLyrics:
        timed = self.lyrics.prepare(
            text, duration, layout.bpm, layout.language, layout.lyrics_format, layout.lyrics_start
        )
        if hasattr(backbone_of(self.model), "prompt_conditioning"):  # it reads the raw text, not phonemes
            return replace(timed, text=text, unknown_phonemes=0)
        return replace(timed, text=text)

    def style(self, prompt: str) -> tuple[Tensor, Tensor]:
        """(1, S, D) prompt states and (1, S) mask; one prompt per encoder call (padding changes numbers)."""
        if prompt not in self._styles:
            if not isinstance(self._text_encoder, nn.Module):
                self._text_encoder = self._text_encoder()
            encoding = self._text_encoder([prompt])
            self._styles[prompt] = (encoding.hidden.float().cpu(), encoding.mask.cpu())
        return self._styles[prompt]

    def conditioning(
        self,
        prompt: str,
        timed: TimedLyrics,
        frames: int,
        total: int | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        timbre: Tensor | None = None,
    ) -> DiTConditioning:
        """Conditioning of one song with ``frames`` valid frames, padded to ``total`` (a batch's longest).

        ``context``/``context_mask`` (1, C, T)/(1, 1, T) give the kept frames of a repaint or extend, as
        masked-span training did; a backbone without a context input refuses them in one line.
        ``timbre``: a reference from ``timbre_reference`` (backbones with a timbre input).
        """
        total = frames if total is None else total
        if context is not None:
            require(
                self.model, "context", "source modes", "use a backbone with a context input (use_context)"
            )
        backbone = backbone_of(self.model)
        if hasattr(backbone, "prompt_conditioning"):  # it encodes prompt and raw lyrics itself (ACE-Step 1.5)
            extra = {} if timbre is None else {"timbre": timbre}
            cond = backbone.prompt_conditioning(
                prompt, timed.text, frames, total, context, context_mask, **extra
            )
            return cond.to(self.device)
        style, mask = self.style(prompt)
        grid = nn.functional.pad(timed.grid(frames, self.frame_rate), (0, total - frames))
        valid = torch.arange(total) < frames
        cond = DiTConditioning(
            style, mask, grid[None], context=context, context_mask=context_mask, frame_mask=valid[None]
        )
        return cond.to(self.device)

    def timbre_reference(self, path: str | Path) -> tuple[Tensor, dict[str, Any]]:
        """The backbone's timbre reference of an audio file (ACE-Step 1.5: ``reference_audio``) and the file's
        identity for the sidecar; a backbone without a timbre input refuses it in one line."""
        backbone = backbone_of(self.model)
        if not hasattr(backbone, "timbre_from_audio"):
            raise RefrainInputError(
                "--timbre_audio",
                "this backbone has no timbre input",
                "sample without it, or use an ace15 model",
            )
        audio, identity = self.load_source(path)
        return backbone.timbre_from_audio(audio, self.vae), identity

    def noise(self, seed: int, frames: int) -> tuple[Tensor, torch.Generator]:
        """(1, C, frames) noise from a CPU generator (the same on every device) and that generator after it."""
        generator = torch.Generator().manual_seed(int(seed))
        layout = spec_of(self.model).latent_layout  # drawn like the backbone's reference pipeline draws it
        return draw_noise(generator, self.latent_channels, frames, layout), generator

    def load_source(self, source: Source) -> tuple[Tensor, dict[str, Any]]:
        """(C, N) float32 source audio at the VAE's rate and channel count, and its identity for the sidecar."""
        if isinstance(source, np.ndarray):
            data = np.asarray(source, dtype=np.float32)
            if data.ndim != 2 or data.shape[0] != self.vae.audio_channels:
                raise RefrainInputError(
                    "source audio",
                    f"array shaped {data.shape}",
                    f"pass ({self.vae.audio_channels}, samples) float32 at {self.sample_rate} Hz",
                )
            return torch.from_numpy(data.copy()), array_identity(data)
        path = resolve_identity(source, "source audio") if isinstance(source, Mapping) else Path(source)
        loaded = load_audio(path, sample_rate=self.sample_rate, channels=self.vae.audio_channels)
        return torch.from_numpy(loaded.samples), file_identity(path)

    def encode(self, audio: Tensor) -> Tensor:
        """Posterior mean of a whole (C, N) song, encoded in overlapping chunks: (1, C_latent, T) on the device."""
        return self.vae.encode_chunked(audio[None], output_device="cpu").mode().float().to(self.device)

    def decode(self, latent: Tensor, samples: int) -> Tensor:
        """(1, C, T) latent -> (channels, samples) float32 CPU audio, decoded in overlapping chunks."""
        audio = self.vae.decode_chunked(latent.float(), output_device="cpu")[0]
        return audio[..., :samples].float()

    def callback(self, mode: str, total: int) -> StepCallback | None:
        """A solver callback reporting progress (never replaces the state)."""
        if self.progress is None:
            return None
        report = self.progress

        def step(index: int, x: Tensor, sigma_next: float) -> None:
            report(mode, index + 1, total)

        return step

    def result(
        self,
        mode: str,
        params: Mapping[str, Any],
        options: SamplerOptions,
        latent: Tensor,
        audio: Tensor,
        timed: TimedLyrics,
        **facts: Any,
    ) -> SongResult:
        """Wrap audio and latent with the sidecar that regenerates them."""
        samples = audio.detach().cpu().float().numpy()
        dtype = next(self.model.parameters()).dtype
        sidecar = new_sidecar(
            mode,
            params,
            options.to_dict(),
            **facts,
            bundle={"path": self.bundle_path, "hash": self.bundle_hash},
            lyrics_timing=timed.timing(),
            lyrics_source=timed.source,
            unknown_phonemes=timed.unknown_phonemes,
            lyrics_notes=list(timed.notes),
            sample_rate=self.sample_rate,
            num_samples=int(samples.shape[-1]),
            num_frames=int(latent.shape[-1]),
            duration=samples.shape[-1] / self.sample_rate,
            device=str(self.device),
            dtype=str(dtype).removeprefix("torch."),
        )
        return SongResult(samples, self.sample_rate, sidecar, latent[0].detach().cpu())
