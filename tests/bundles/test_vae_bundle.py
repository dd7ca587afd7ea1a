"""The VAE bundle: diffusers can open its weights, it reloads equal, and bad bundles fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderOobleck

from refrain.bundles.vae import BUNDLE_FORMAT_VERSION, load_vae_bundle, read_manifest, save_vae_bundle
from refrain.errors import RefrainInputError
from refrain.models.vae.oobleck import OobleckVAE

CONFIG = {"model": {"vae": {"chunk_seconds": 0.5, "overlap_seconds": 0.1}}, "seed": 1}


def test_bundle_opens_with_diffusers_and_reloads_equal(
    tmp_path: Path, tiny_vae: OobleckVAE, music: torch.Tensor
) -> None:
    out = save_vae_bundle(tmp_path / "bundle", tiny_vae.autoencoder, CONFIG, extra={"global_step": 7})
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    opened = AutoencoderOobleck.from_pretrained(out / "vae")
    with torch.no_grad():
        expected = tiny_vae.decode(tiny_vae.encode(music).mean)
        assert torch.equal(opened.decode(opened.encode(music).latent_dist.mean).sample, expected)
        bundle = load_vae_bundle(out)
        assert torch.equal(bundle.model.decode(bundle.model.encode(music).mean), expected)
    assert bundle.config == CONFIG and bundle.model.chunk_seconds == 0.5
    manifest = bundle.manifest
    assert manifest["format_version"] == BUNDLE_FORMAT_VERSION and manifest["global_step"] == 7
    assert (manifest["sample_rate"], manifest["hop_length"], manifest["latent_channels"]) == (44100, 64, 4)
    assert set(manifest["files"]) == {
        "config.yaml",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    }


def test_newer_format_version_is_refused(tmp_path: Path, tiny_vae: OobleckVAE) -> None:
    out = save_vae_bundle(tmp_path / "bundle", tiny_vae.autoencoder, CONFIG)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = BUNDLE_FORMAT_VERSION + 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RefrainInputError, match="newer than this refrain understands.*Fix: upgrade refrain"):
        load_vae_bundle(out)


def test_changed_weights_and_missing_manifest_are_reported(tmp_path: Path, tiny_vae: OobleckVAE) -> None:
    out = save_vae_bundle(tmp_path / "bundle", tiny_vae.autoencoder, CONFIG)
    weights = out / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(RefrainInputError, match="content hash does not match"):
        load_vae_bundle(out)
    with pytest.raises(RefrainInputError, match="manifest.json missing"):
        read_manifest(tmp_path)


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, tiny_vae: OobleckVAE) -> None:
    out = save_vae_bundle(tmp_path / "bundle", tiny_vae.autoencoder, CONFIG)
    with pytest.raises(RefrainInputError, match="already exists"):
        save_vae_bundle(out, tiny_vae.autoencoder, CONFIG)
    save_vae_bundle(out, tiny_vae.autoencoder, {"seed": 2}, overwrite=True)
    assert load_vae_bundle(out).config == {"seed": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging folders left behind


def test_the_encode_overlap_travels_with_the_bundle(tmp_path: Path, tiny_vae: OobleckVAE) -> None:
    """A preset's encode_overlap_seconds reaches refrain-encode through the bundle; an older bundle has none."""
    codec = {"chunk_seconds": 2.0, "overlap_seconds": 0.5, "encode_overlap_seconds": 0.15}
    bundle = load_vae_bundle(
        save_vae_bundle(tmp_path / "new", tiny_vae.autoencoder, {"model": {"vae": codec}})
    )
    assert (bundle.model.overlap_seconds, bundle.model.encode_overlap_seconds) == (0.5, 0.15)
    older = load_vae_bundle(save_vae_bundle(tmp_path / "old", tiny_vae.autoencoder, CONFIG))
    assert older.model.encode_overlap_seconds is None and older.model.overlap_seconds == 0.1
