"""Frozen self-supervised audio teachers for REPA (MERT, mHuBERT), loaded from local folders.

Each teacher hears mono audio at its own rate, in its own chunk length, and REPA reads one of its hidden
layers: MERT-v1 (24 kHz, 5 s chunks each normalised to zero mean and unit variance, 75 frames/s) and
mHuBERT-147 (16 kHz, 30 s chunks, 50 frames/s). Loading goes through ``transformers.AutoModel`` with
``local_files_only=True``; MERT ships its own modelling code, which runs only when the user sets
``trust_remote_code: true``. Teachers run once in data_prep (running both every step is what made
ACE-Step's trainer slow); training reads their cached features.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import torch
from torch import Tensor, nn

from refrain.errors import RefrainInputError


@dataclass
class TeacherSpec:
    """Everything about one teacher that config sets; cheap to build (loads nothing)."""

    name: str
    checkpoint_dir: str
    sample_rate: int
    layer: int = -1  # index into hidden_states: 0 = feature projection, -1 = last block
    chunk_seconds: float = 30.0
    normalize: bool = False  # per-chunk zero mean / unit variance (MERT's feature extractor does this)
    weight: float = 1.0
    trust_remote_code: bool = False
    feature_dim: int | None = None  # read from config.json when None

    def config_path(self) -> Path:
        path = Path(self.checkpoint_dir).expanduser()
        if not (path / "config.json").is_file():
            raise RefrainInputError(
                f"repa.teachers.{self.name}.checkpoint_dir ({path})",
                "no Hugging Face checkpoint there (config.json missing)",
                "download the teacher once (e.g. huggingface-cli download m-a-p/MERT-v1-330M --local-dir DIR) "
                "and point this key at DIR; refrain never downloads at run time",
            )
        return path / "config.json"

    def resolved_feature_dim(self) -> int:
        """Teacher feature size, for sizing the REPA projector without loading weights."""
        if self.feature_dim is not None:
            return int(self.feature_dim)
        return int(json.loads(self.config_path().read_text())["hidden_size"])


def _stride_and_field(config: object) -> tuple[int, int]:
    """Total hop (samples per frame) and receptive field of a wav2vec2-style conv feature encoder."""
    kernels = list(getattr(config, "conv_kernel", [10, 3, 3, 3, 3, 2, 2]))
    strides = list(getattr(config, "conv_stride", [5, 2, 2, 2, 2, 2, 2]))
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return jump, field


class SSLTeacher(nn.Module):
    """(B, channels, samples) audio at any rate -> (B, T_teacher, D) features of the chosen layer."""

    def __init__(self, spec: TeacherSpec) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config_path = spec.config_path()
        raw = json.loads(config_path.read_text())
        if "auto_map" in raw and not spec.trust_remote_code:
            raise RefrainInputError(
                f"repa.teachers.{spec.name}.trust_remote_code",
                f"{config_path.parent} needs the modelling code shipped with it (model_type {raw.get('model_type')})",
                "review that code, then set trust_remote_code: true for this teacher (repa.trust_remote_code=true)",
            )
        try:
            config = AutoConfig.from_pretrained(
                str(config_path.parent), local_files_only=True, trust_remote_code=spec.trust_remote_code
            )
            self.model = AutoModel.from_pretrained(
                str(config_path.parent), local_files_only=True, trust_remote_code=spec.trust_remote_code
            )
        except (OSError, ValueError, KeyError) as error:
            raise RefrainInputError(
                f"repa.teachers.{spec.name}.checkpoint_dir ({config_path.parent})",
                f"cannot load the teacher ({error})",
                "check the folder holds config.json and the weights saved with save_pretrained",
            ) from error
        num_layers = int(config.num_hidden_layers)
        if not -(num_layers + 1) <= spec.layer <= num_layers:
            raise RefrainInputError(
                f"repa.teachers.{spec.name}.layer",
                f"{spec.layer} is outside [-{num_layers + 1}, {num_layers}]",
                f"pick a hidden layer of this {num_layers}-layer model (0 = conv features, -1 = last)",
            )
        self.spec = spec
        self.hop, self.receptive_field = _stride_and_field(config)
        self.feature_dim = int(config.hidden_size)
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def frame_rate(self) -> float:
        return self.spec.sample_rate / self.hop

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` at the teacher rate (chunking included)."""
        chunk = int(round(self.spec.chunk_seconds * self.spec.sample_rate))
        full, rest = divmod(num_samples, chunk)
        frames = full * self._frames(chunk)
        return frames + (self._frames(max(rest, self.receptive_field)) if rest else 0)

    def _frames(self, length: int) -> int:
        return (length - self.receptive_field) // self.hop + 1

    def train(self, mode: bool = True) -> SSLTeacher:
        """Frozen: stays in eval mode so cached and online features agree."""
        super().train(False)
        return self

    def to_teacher_rate(self, audio: Tensor, sample_rate: int) -> Tensor:
        """Mono mix and resample (soxr, high quality) to the teacher rate: (B, samples')."""
        mono = audio.float().mean(dim=1) if audio.dim() == 3 else audio.float()
        if sample_rate == self.spec.sample_rate:
            return mono
        array = mono.detach().cpu().numpy().T  # soxr wants (frames, channels)
        out = soxr.resample(np.ascontiguousarray(array), sample_rate, self.spec.sample_rate, quality="HQ")
        return torch.from_numpy(np.ascontiguousarray(out.T)).to(audio.device)

    def _run(self, chunks: Tensor) -> Tensor:
        if self.spec.normalize:
            mean = chunks.mean(dim=-1, keepdim=True)
            var = chunks.var(dim=-1, keepdim=True, unbiased=False)
            chunks = (chunks - mean) / torch.sqrt(var + 1e-7)
        out = self.model(chunks, output_hidden_states=True)
        return out.hidden_states[self.spec.layer]

    @torch.no_grad()
    def forward(self, audio: Tensor, sample_rate: int) -> Tensor:
        """Features for a batch of equal-length clips; longer than a chunk is split, chunks batched."""
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        wav = self.to_teacher_rate(audio, sample_rate).to(device=device, dtype=dtype)
        batch, length = wav.shape
        chunk = int(round(self.spec.chunk_seconds * self.spec.sample_rate))
        full = length // chunk
        pieces = []
        if full:
            body = wav[:, : full * chunk].reshape(batch * full, chunk)
            feats = self._run(body)
            pieces.append(feats.reshape(batch, full * feats.shape[1], feats.shape[2]))
        rest = wav[:, full * chunk :]
        if rest.shape[1]:
            if rest.shape[1] < self.receptive_field:
                rest = torch.nn.functional.pad(rest, (0, self.receptive_field - rest.shape[1]))
            pieces.append(self._run(rest))
        return torch.cat(pieces, dim=1)


def load_teachers(specs: dict[str, TeacherSpec] | list[TeacherSpec]) -> nn.ModuleDict:
    """Build every teacher of a REPA config, keyed by name."""
    items = specs.values() if isinstance(specs, dict) else specs
    return nn.ModuleDict({spec.name: SSLTeacher(spec) for spec in items})


def create_random_hubert(
    out_dir: str | Path, hidden_size: int = 32, num_layers: int = 2, conv_channels: int = 16, seed: int = 0
) -> Path:
    """Save a tiny randomly initialised HubertModel checkpoint (tests, the offline demo).

    It keeps HuBERT's real conv stack (hop 320, field 400), so frame rates match a real teacher's.
    """
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    config = HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 16),
        intermediate_size=hidden_size * 2,
        conv_dim=(conv_channels,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=max(1, math.gcd(hidden_size, 4)),
    )
    model = HubertModel(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return out
