"""A self-describing VAE bundle on disk, readable without Lightning (data prep encodes, the sampler decodes).

Layout::

    bundle/
      vae/                     diffusers' own format: AutoencoderOobleck.from_pretrained(bundle / "vae")
        config.json
        diffusion_pytorch_model.safetensors
      config.yaml              the resolved training config the weights came from
      manifest.json            format version, kind, shape facts, sha256 of every file above, and a
                               bundle_hash over the manifest itself (format 2)

Loading reads exactly the listed files by name (``refrain.models.vae.weights``): verification refuses any
file the manifest does not list, and the weights are only ever read from the one safetensors file.

Writes go to a temporary folder beside the target that is renamed into place, so a failed export never
leaves a half bundle where a good one was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import AutoencoderOobleck

from refrain.bundles.manifest import (
    MANIFEST_NAME,
    manifest_hash,
    read_bundle_manifest,
    sha256_file,
    verify_files,
    verify_manifest_hash,
)
from refrain.errors import RefrainInputError
from refrain.fileio import atomic_folder
from refrain.models.vae.oobleck import OobleckVAE
from refrain.models.vae.weights import load_autoencoder

BUNDLE_FORMAT_VERSION = 2  # 2: bundle_hash covers the manifest
WEIGHTS_DIR = "vae"


@dataclass
class VAEBundle:
    """A loaded bundle: the ready model, the config it was trained with and the manifest."""

    model: OobleckVAE
    config: dict[str, Any]
    manifest: dict[str, Any]
    path: Path


def save_vae_bundle(
    out_dir: str | Path,
    autoencoder: AutoencoderOobleck,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``autoencoder`` (usually the EMA weights) plus ``config`` as a bundle at ``out_dir``."""
    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise RefrainInputError(target, "already exists", "choose a new output folder or pass --overwrite")
    with atomic_folder(target) as staging:
        autoencoder.save_pretrained(staging / WEIGHTS_DIR, safe_serialization=True)
        (staging / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        manifest = {
            "format_version": BUNDLE_FORMAT_VERSION,
            "kind": "vae",
            "sample_rate": int(autoencoder.config.sampling_rate),
            "hop_length": int(autoencoder.hop_length),
            "frame_rate": float(autoencoder.config.sampling_rate) / float(autoencoder.hop_length),
            "latent_channels": int(autoencoder.config.decoder_input_channels),
            "audio_channels": int(autoencoder.config.audio_channels),
            "parameters": sum(p.numel() for p in autoencoder.parameters()),
            "files": {p.relative_to(staging).as_posix(): sha256_file(p) for p in files},
            **(extra or {}),
        }
        manifest["bundle_hash"] = manifest_hash(manifest)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return target


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check a bundle's manifest: it must exist, be a VAE bundle, and have a known version."""
    return read_bundle_manifest(path, "vae", BUNDLE_FORMAT_VERSION, "pass a VAE bundle")


def verify_bundle(path: str | Path, manifest: dict[str, Any]) -> None:
    """Recompute every file hash (a changed, missing or unlisted file is named) and the manifest's hash."""
    verify_files(path, manifest.get("files", {}))
    if int(manifest["format_version"]) >= 2:
        verify_manifest_hash(path, manifest)


def load_vae_bundle(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> VAEBundle:
    """Open a bundle: checked manifest, optional hash verification, model in eval mode on ``device``."""
    root = Path(path)
    manifest = read_manifest(root)
    if verify:
        verify_bundle(root, manifest)
    config_path = root / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    autoencoder = load_autoencoder(root / WEIGHTS_DIR)  # the listed files by name, safetensors only
    codec = ((config or {}).get("model") or {}).get("vae") or {}
    encode_overlap = codec.get("encode_overlap_seconds")  # absent from bundles made before the field
    model = OobleckVAE(
        autoencoder,
        chunk_seconds=float(codec.get("chunk_seconds", 20.0)),
        overlap_seconds=float(codec.get("overlap_seconds", 2.0)),
        encode_overlap_seconds=None if encode_overlap is None else float(encode_overlap),
    )
    model = model.to(device).eval()
    return VAEBundle(model, config or {}, manifest, root)
