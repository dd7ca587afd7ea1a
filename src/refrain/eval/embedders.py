"""Audio (and text) embedding models for song evaluation, each loaded from a local folder, offline.

Two kinds, both through ``transformers``:
- ``ssl``: a wav2vec2/HuBERT-style model (MERT, mHuBERT, HuBERT); a clip's embedding is the time mean of one
  hidden layer (configurable), using refrain's REPA teacher loader so both read folders the same way.
- ``clap``: a ``ClapModel`` with its feature extractor and tokenizer; gives audio and text embeddings in
  one space, so it serves FAD and the text-audio alignment (CLAP score) at once.
A model's fingerprint (sha256 of its config and weight files) keys the embedding cache and goes in the
report, so two reports are only compared when they used the same models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from refrain.errors import RefrainInputError

WEIGHT_SUFFIXES = (".safetensors", ".json", ".txt", ".model")


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over the names and contents of a model folder's config, tokenizer and safetensors files."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        digest.update(path.relative_to(root).as_posix().encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _require_folder(key: str, folder: str | Path) -> Path:
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise RefrainInputError(
            f"{key} ({path})",
            "no Hugging Face model there (config.json missing)",
            "download the model once with huggingface-cli download ... --local-dir DIR and pass DIR",
        )
    if any(path.glob("*.bin")) and not any(path.glob("*.safetensors")):
        raise RefrainInputError(
            f"{key} ({path})", "holds pickled .bin weights", "convert them to safetensors"
        )
    return path


class AudioEmbedder(Protocol):
    """What FAD needs: a name, a fingerprint, a rate, and (B, samples) mono audio -> (B, D) embeddings."""

    name: str
    fingerprint: str
    sample_rate: int

    def embed_audio(self, mono: np.ndarray) -> np.ndarray: ...


@dataclass
class EmbedderSpec:
    """One configured embedding model: ``kind`` ssl|clap, the local folder and, for ssl, layer and rate."""

    name: str
    kind: str
    checkpoint_dir: str
    layer: int = -1
    sample_rate: int = 24000
    chunk_seconds: float = 5.0
    normalize: bool = False
    trust_remote_code: bool = False  # MERT ships its own modelling code: runs only when the user says so


class SSLEmbedder:
    """Time-mean of one hidden layer of a self-supervised audio model (MERT, HuBERT ...)."""

    def __init__(self, spec: EmbedderSpec, device: str = "cpu") -> None:
        from refrain.models.teachers import SSLTeacher, TeacherSpec

        folder = _require_folder(f"--{spec.name}", spec.checkpoint_dir)
        teacher = TeacherSpec(
            spec.name, str(folder), spec.sample_rate, spec.layer, spec.chunk_seconds, spec.normalize
        )
        self.teacher = SSLTeacher(teacher).to(device)
        self.name, self.sample_rate = spec.name, spec.sample_rate
        self.fingerprint = f"{folder_fingerprint(folder)}:layer{spec.layer}"

    @torch.no_grad()
    def embed_audio(self, mono: np.ndarray) -> np.ndarray:
        wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
        features = self.teacher(wave, self.sample_rate)
        return features.mean(dim=1).float().cpu().numpy()


class ClapEmbedder:
    """CLAP audio and text embeddings (L2-normalised, so their dot product is the cosine similarity)."""

    def __init__(self, spec: EmbedderSpec, device: str = "cpu") -> None:
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        folder = _require_folder(f"--{spec.name}", spec.checkpoint_dir)
        self.model = ClapModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True).to(
            device
        )
        self.model.eval()
        self.features = ClapFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.name, self.device = spec.name, device
        self.sample_rate = int(self.features.sampling_rate)
        self.fingerprint = folder_fingerprint(folder)

    @staticmethod
    def _vectors(output: object) -> torch.Tensor:
        tensor = output if isinstance(output, torch.Tensor) else output.pooler_output  # transformers 4 vs 5
        return torch.nn.functional.normalize(tensor.float(), dim=-1)

    def _centre(self, mono: np.ndarray) -> list[np.ndarray]:
        """The middle window CLAP hears (its extractor would draw random crops from longer audio)."""
        size = int(self.features.nb_max_samples)
        rows = np.asarray(mono, dtype=np.float32)
        start = max(0, (rows.shape[-1] - size) // 2)
        return list(rows[:, start : start + size])

    @torch.no_grad()
    def embed_audio(self, mono: np.ndarray) -> np.ndarray:
        inputs = self.features(
            list(np.asarray(mono, dtype=np.float32)), sampling_rate=self.sample_rate, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_features", "is_longer")}
        return self._vectors(self.model.get_audio_features(**inputs)).cpu().numpy()

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return self._vectors(self.model.get_text_features(**tokens)).cpu().numpy()


def build_embedder(spec: EmbedderSpec, device: str = "cpu") -> SSLEmbedder | ClapEmbedder:
    """The embedder a spec names (``ssl`` or ``clap``), with a one-line error for anything else."""
    kinds = {"ssl": SSLEmbedder, "clap": ClapEmbedder}
    if spec.kind not in kinds:
        raise RefrainInputError(
            f"eval.embedders.{spec.name}.kind", f"unknown kind {spec.kind!r}", "use ssl or clap"
        )
    return kinds[spec.kind](spec, device)
