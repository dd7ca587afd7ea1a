"""The frozen encoders DiT training conditions on, run by one class for both the cache and the online path.

``refrain-encode`` calls ``ConditioningEncoder.encode_record`` once per record and stores the result;
training reads that entry, or, for a record without one, calls the very same method and crops the
result the same way, so both paths give the same batch. A record is always encoded whole (the chunked
VAE encoder over the full song, each teacher over the full song, all prompt variants in one text
encoder call): encoding only the crop would make the numbers depend on where the crop fell.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from refrain.audio.io import load_audio
from refrain.bundles.vae import load_vae_bundle, read_manifest
from refrain.data.cache import EntryMeta, TensorEntry, fingerprint_of
from refrain.data.feature_quant import QUANT_BLOCK, SCALE_PREFIX, quantize_int8
from refrain.data.prompt_variants import record_prompt_variants
from refrain.errors import RefrainInputError
from refrain.fileio import folder_digest
from refrain.models.teachers import SSLTeacher, TeacherSpec, load_teachers
from refrain.models.text_encoder import TextEncoder, default_text_encoder_dir
from refrain.models.vae.oobleck import OobleckVAE

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FEATURE_DTYPES = (*DTYPES, "int8")  # int8: teacher features with stored scales (refrain.data.feature_quant)
TEACHER_RATES = ("native", "latent")


@dataclass(frozen=True)
class EncodeSettings:
    """Storage choices that change an entry's numbers, so they are part of the fingerprint."""

    tag_shuffles: int = 4  # fixed tag shuffles per record (plus each non-empty recaption)
    latent_dtype: str = "float32"  # latent mean/std on disk: float32 | bfloat16 | float16
    feature_dtype: str = "float32"  # teacher features and style embeddings on disk (int8: style in bfloat16)
    text_max_length: int = 256  # text encoder truncation
    teacher_rate: str = "native"  # native | latent: teacher features average-pooled to the latent frame rate

    def __post_init__(self) -> None:
        if self.teacher_rate not in TEACHER_RATES:
            raise RefrainInputError(
                "teacher_rate",
                f"{self.teacher_rate!r} is not a teacher rate",
                f"use one of {', '.join(TEACHER_RATES)}",
            )
        for name, allowed in (("latent_dtype", tuple(DTYPES)), ("feature_dtype", FEATURE_DTYPES)):
            if getattr(self, name) not in allowed:
                raise RefrainInputError(
                    name,
                    f"{getattr(self, name)!r} is not a storage dtype",
                    f"use one of {', '.join(allowed)}",
                )
        if self.tag_shuffles < 1:
            raise RefrainInputError("tag_shuffles", f"{self.tag_shuffles} is below 1", "use 1 or more")


def as_teacher_specs(teachers: Any) -> dict[str, TeacherSpec]:
    """TeacherSpecs keyed by name from a dict/list of specs or of plain mappings (a Hydra node), or None."""
    if not teachers:
        return {}
    items = teachers.values() if isinstance(teachers, Mapping) else teachers
    specs: dict[str, TeacherSpec] = {}
    for item in items:
        if isinstance(item, TeacherSpec):
            spec = item
        elif isinstance(item, Mapping):
            spec = TeacherSpec(**{str(k): v for k, v in dict(item).items() if k != "_target_"})
        else:
            raise RefrainInputError(
                "repa.teachers",
                f"cannot read a teacher from {type(item).__name__}",
                "list TeacherSpec entries",
            )
        specs[spec.name] = spec
    return specs


def vae_facts(vae_bundle: str | Path) -> dict[str, Any]:
    """Shape facts of a VAE bundle from its manifest (no weights loaded): rate, hop, frame rate, channels."""
    manifest = read_manifest(vae_bundle)
    return {
        name: manifest[name]
        for name in ("sample_rate", "hop_length", "frame_rate", "latent_channels", "audio_channels")
    }


def encoder_fingerprint(
    vae_bundle: str | Path,
    text_encoder_dir: str | Path | None,
    teachers: Mapping[str, TeacherSpec] | None,
    settings: EncodeSettings,
) -> str:
    """The cache folder name for these encoders; computed from files, without loading any model."""
    manifest = read_manifest(vae_bundle)
    identity = {
        "vae": fingerprint_of({"files": manifest.get("files", {})}),
        "text_encoder": folder_digest(text_encoder_dir or default_text_encoder_dir()),
        "teachers": {
            name: {
                "sample_rate": spec.sample_rate,
                "layer": spec.layer,
                "chunk_seconds": spec.chunk_seconds,
                "normalize": spec.normalize,
                "files": folder_digest(spec.checkpoint_dir),
            }
            for name, spec in sorted((teachers or {}).items())
        },
        "settings": settings_identity(settings),
    }
    return fingerprint_of(identity)


def settings_identity(settings: EncodeSettings) -> dict[str, Any]:
    """The settings as the fingerprint sees them; a default-valued later field is left out, so caches
    encoded before that field existed keep their folder name."""
    identity = asdict(settings)
    if identity["teacher_rate"] == "native":
        del identity["teacher_rate"]
    if settings.feature_dtype == "int8":  # an entry is only ever read with the block it was written with
        identity["int8_block"] = QUANT_BLOCK
    return identity


def pool_to_frames(features: Tensor, frames: int) -> Tensor:
    """(T, D) -> (min(T, frames), D) float32: each output frame the mean of the teacher frames under it.

    REPA resamples the DiT's projection to the teacher's frame count anyway, so teacher features at the
    latent rate carry what the loss compares at a fraction of the bytes. Never upsampled (that would only
    add bytes).
    """
    if frames <= 0 or features.shape[0] <= frames:
        return features.float()
    return F.adaptive_avg_pool1d(features.float().T[None], frames)[0].T.contiguous()


def load_record_audio(record: Mapping[str, Any], sample_rate: int, channels: int) -> Tensor:
    """A record's whole song as float32 (channels, samples) at ``sample_rate`` (cache and online path)."""
    loaded = load_audio(str(record["filename"]), sample_rate=sample_rate, channels=channels)
    if loaded.nonfinite_repaired or loaded.clipped:  # encoded once per song, so this names it once
        log.warning(
            "%s: %d NaN/inf samples zeroed and %d samples beyond full scale clipped before encoding",
            record["filename"],
            loaded.nonfinite_repaired,
            loaded.clipped,
        )
    return torch.from_numpy(loaded.samples)


class ConditioningEncoder(nn.Module):
    """Frozen VAE encoder + text encoder + REPA teachers; always in eval mode, never tracks gradients."""

    def __init__(
        self,
        vae: OobleckVAE,
        text_encoder: TextEncoder,
        teachers: Mapping[str, SSLTeacher] | None = None,
        settings: EncodeSettings | None = None,
        fingerprint: str = "",
    ) -> None:
        super().__init__()
        if not fingerprint:
            raise RefrainInputError(
                "fingerprint", "empty", "use ConditioningEncoder.from_paths or pass encoder_fingerprint(...)"
            )
        self.vae = vae
        self.text_encoder = text_encoder
        self.teachers = nn.ModuleDict(dict(teachers or {}))
        self.settings = settings or EncodeSettings()
        self.fingerprint = fingerprint
        self.requires_grad_(False)
        self.train(False)

    @classmethod
    def from_paths(
        cls,
        vae_bundle: str | Path,
        text_encoder_dir: str | Path | None = None,
        teachers: Any = None,
        settings: EncodeSettings | None = None,
        device: str | torch.device = "cpu",
        verify_bundle: bool = True,
    ) -> ConditioningEncoder:
        """Load everything from local folders (a VAE bundle, a text encoder folder, TeacherSpecs)."""
        settings = settings or EncodeSettings()
        specs = as_teacher_specs(teachers)
        fingerprint = encoder_fingerprint(vae_bundle, text_encoder_dir, specs, settings)
        vae = load_vae_bundle(vae_bundle, device="cpu", verify=verify_bundle).model
        text = TextEncoder(text_encoder_dir, max_length=settings.text_max_length)
        encoder = cls(vae, text, load_teachers(specs) if specs else None, settings, fingerprint)
        return encoder.to(device)

    def train(self, mode: bool = True) -> ConditioningEncoder:
        """Frozen: dropout or batch statistics would make cached and online outputs differ."""
        return super().train(False)

    @property
    def sample_rate(self) -> int:
        return self.vae.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.vae.frame_rate

    @property
    def latent_channels(self) -> int:
        return self.vae.latent_channels

    @property
    def teacher_names(self) -> list[str]:
        return sorted(self.teachers.keys())

    @property
    def audio_channels(self) -> int:
        return 1 if self.vae.audio_channels == 1 else 2

    def load_audio(self, record: Mapping[str, Any]) -> Tensor:
        """The record's whole song as float32 (channels, samples) at the VAE rate."""
        return load_record_audio(record, self.sample_rate, self.audio_channels)

    @torch.no_grad()
    def encode_audio(self, audio: Tensor) -> dict[str, Tensor]:
        """(channels, samples) -> latent_mean/latent_std (C, N) and teacher.<name> (T, D), on the CPU."""
        latent_dtype = DTYPES[self.settings.latent_dtype]
        quantized = self.settings.feature_dtype == "int8"
        posterior = self.vae.encode_chunked(audio[None].float(), output_device="cpu")
        out = {
            "latent_mean": posterior.mean[0].to(latent_dtype).contiguous(),
            "latent_std": posterior.std[0].to(latent_dtype).contiguous(),
        }
        for name in self.teacher_names:
            features = self.teachers[name](audio[None].float(), self.sample_rate)[0].to("cpu")
            if self.settings.teacher_rate == "latent":  # pooled in float32, then stored
                features = pool_to_frames(features, out["latent_mean"].shape[-1])
            if quantized:
                out[f"teacher.{name}"], out[SCALE_PREFIX + name] = quantize_int8(features)
            else:
                out[f"teacher.{name}"] = features.to(DTYPES[self.settings.feature_dtype]).contiguous()
        return out

    @torch.no_grad()
    def encode_prompts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """All variants in ONE call (batch padding changes the numbers): (V, S, D) states, (V, S) mask."""
        encoding = self.text_encoder(list(texts))
        dtype = DTYPES.get(self.settings.feature_dtype, torch.bfloat16)  # int8 is for teacher features only
        hidden = encoding.hidden.to("cpu", dtype).contiguous()
        return hidden, encoding.mask.cpu().contiguous()

    def encode_record(self, record: Mapping[str, Any], audio: Tensor | None = None) -> TensorEntry:
        """The whole-song entry of one dataset record (``audio`` when already decoded, else loaded)."""
        if audio is None:
            audio = self.load_audio(record)
        variants = record_prompt_variants(record, self.settings.tag_shuffles)
        tensors = self.encode_audio(audio)
        tensors["style"], tensors["style_mask"] = self.encode_prompts([v.text for v in variants])
        meta = EntryMeta(
            content_hash=str(record["content_hash"]),
            fingerprint=self.fingerprint,
            key=str(record.get("keys") or ""),
            prompts=[v.text for v in variants],
            variant_names=[v.name for v in variants],
            num_samples=int(audio.shape[-1]),
            sample_rate=self.sample_rate,
        )
        return TensorEntry(tensors, meta)
