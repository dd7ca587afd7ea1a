"""ACE-Step 1.5's timbre reference: what its timbre encoder reads, from a song or a reference audio file.

The condition encoder packs one timbre token, pooled from "reference" latents (B, R, C) channels last.
Without a reference the release feeds 30 s of its silence latent (``model.dit.timbre=silence``, the
default and what ``AceStepPipeline`` does without ``reference_audio``). With ``reference_audio`` the
pipeline repeats the audio to at least 30 s, joins three 10 s pieces of it (front, middle, back), and
VAE-encodes them: 750 latent frames at 25 frames/s. ``reference_latents`` runs that very method of
diffusers' pipeline (``AceStepPipeline.prepare_reference_audio_latents``, called, not re-written) over
refrain's VAE, taking the posterior mean where the pipeline draws one sample from the global generator:
the reference is then a deterministic function of the audio, so a cached one equals an online one and a
sidecar regenerates bit for bit.

``model.dit.timbre=song`` conditions every training crop on its own song's reference, computed exactly
as ``refrain-infer text2music --timbre_audio SONG`` computes it at sampling time. ``TimbreSide`` caches
it once per song (``<dataset>/cache/ace15_timbre/<VAE fingerprint>/<content hash>.safetensors``;
``refrain-encode --ace15 RELEASE --ace15_timbre`` fills it before training) and falls back to the same
computation when a song has no file yet, writing it back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import AceStepPipeline
from torch import Tensor, nn

from refrain.errors import RefrainInputError

TIMBRE_MODES = ("silence", "song")
SONG_KEYS = ("content_hashes", "filenames")
"""The DiT batch keys naming each item's song (``refrain.data.collate``): what ``timbre=song`` reads."""


class _PosteriorMean:
    """The ``vae`` the pipeline's method calls: refrain's VAE whose ``latent_dist.sample()`` is the mean."""

    def __init__(self, vae: nn.Module) -> None:
        self.vae = vae

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def encode(self, audio: Tensor) -> SimpleNamespace:
        posterior = self.vae.encode(self.vae.pad_to_hop(audio))
        return SimpleNamespace(latent_dist=SimpleNamespace(sample=posterior.mode))


@torch.no_grad()
def reference_latents(audio: Tensor, vae: nn.Module) -> Tensor:
    """(1, R, C) float32 timbre reference of (channels, samples) audio at the VAE's rate: the pipeline's
    30 s front/middle/back selection, VAE-encoded in one pass (posterior mean)."""
    if audio.dim() != 2 or audio.shape[-1] == 0:
        raise RefrainInputError(
            "timbre audio", f"shaped {tuple(audio.shape)}", "pass (channels, samples) audio, not empty"
        )
    device = next(vae.parameters()).device
    shim = SimpleNamespace(sample_rate=int(vae.sample_rate), vae=_PosteriorMean(vae))
    latents, _ = AceStepPipeline.prepare_reference_audio_latents(
        shim, reference_audio=audio.float(), batch_size=1, device=device, dtype=torch.float32
    )
    return latents.contiguous()


def load_reference_audio(path: str | Path, vae: nn.Module) -> Tensor:
    """A file's samples at the VAE's rate and channel count, float32 (channels, samples)."""
    from refrain.audio.io import load_audio

    loaded = load_audio(str(path), sample_rate=int(vae.sample_rate), channels=int(vae.audio_channels))
    return torch.from_numpy(loaded.samples)


class TimbreSide:
    """Each song's timbre reference for training (``timbre=song``): a cached file, else computed and stored.

    The VAE is the release folder's ``vae/``, loaded on first use and held outside the backbone's module
    tree (frozen; not trained, saved or averaged), like ``TextSide``'s Qwen3. It runs on the CPU wherever
    training runs, as ``refrain-encode`` runs it, so a pre-filled reference equals an online one bit for bit.
    """

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None) -> None:
        self.root = Path(root)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._vae: Any = None
        self._fingerprint: str | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> TimbreSide:
        return self  # frozen and shared: an EMA copy of the backbone uses the same VAE

    def __reduce__(self) -> tuple[Any, ...]:
        return (TimbreSide, (str(self.root), str(self.cache_dir) if self.cache_dir else None))

    def vae(self) -> nn.Module:
        if self._vae is None:
            from refrain.models.vae.oobleck import OobleckVAE
            from refrain.models.vae.weights import load_autoencoder

            self._vae = OobleckVAE(load_autoencoder(self.root / "vae")).eval().requires_grad_(False)
        return self._vae

    def cache_file(self, content_hash: str) -> Path | None:
        """``<cache>/<VAE fingerprint>/<content hash>.safetensors`` (None without a cache)."""
        if self.cache_dir is None:
            return None
        if self._fingerprint is None:  # the VAE's identity: its config and weight file size
            folder = self.root / "vae"
            parts = [f"{f.name}:{f.stat().st_size}" for f in sorted(folder.iterdir()) if f.is_file()]
            parts.append((folder / "config.json").read_text())
            self._fingerprint = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
        return self.cache_dir / self._fingerprint / f"{content_hash}.safetensors"

    def song(self, content_hash: str, filename: str, device: torch.device) -> Tensor:
        """(1, R, C) reference of one song: its cached file, else computed from its audio and stored."""
        from safetensors.torch import load_file, save_file

        from refrain.fileio import atomic_path

        cached = self.cache_file(content_hash)
        if cached is not None and cached.is_file():
            return load_file(str(cached))["timbre"].to(device)
        with torch.random.fork_rng(devices=[]):  # computing a reference draws no training randomness
            latents = reference_latents(load_reference_audio(filename, self.vae()), self.vae()).cpu()
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as tmp:
                save_file({"timbre": latents.contiguous()}, str(tmp))
        return latents.to(device)

    def batch(self, batch: Mapping[str, Any], device: torch.device) -> Tensor:
        """(B, R, C) references of a DiT batch's songs (its ``content_hashes`` and ``filenames``)."""
        missing = [key for key in SONG_KEYS if key not in batch]
        if missing:
            raise RefrainInputError(
                "model.dit.timbre=song",
                f"the batch does not name its songs (no {', '.join(missing)})",
                "train on refrain's DiT data (data=latents), or set model.dit.timbre=silence",
            )
        hashes: Sequence[str] = batch["content_hashes"]
        names: Sequence[str] = batch["filenames"]
        return torch.cat([self.song(h, n, device) for h, n in zip(hashes, names, strict=True)])


def timbre_cache_dir(dataset_path: str | Path) -> Path:
    """Where a dataset keeps its songs' ACE-Step 1.5 timbre references (training and refrain-encode agree)."""
    return Path(dataset_path) / "cache" / "ace15_timbre"


def timbre_side(mode: str, root: str | Path, dataset_path: str | Path | None) -> TimbreSide | None:
    """The ``TimbreSide`` of ``model.dit.timbre``: None for ``silence``, cached under the dataset for ``song``."""
    if mode not in TIMBRE_MODES:
        raise RefrainInputError(
            "model.dit.timbre",
            f"{mode!r} is not a timbre reference",
            "use silence (the release's silence latent) or song (each crop's own song)",
        )
    if mode == "silence":
        return None
    return TimbreSide(root, timbre_cache_dir(dataset_path) if dataset_path else None)
