"""Bundles exported before the registry (format 1) still load, safely: only an exactly registered
Hydra target maps to a model; a format-1 manifest naming anything else is refused like a new one."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.bundles import TINY_DIT, make_tiny_bundle
from helpers.untrusted import code_pickle, edit_manifest, issue_spec, seal_hash

from refrain.bundles.dit import open_dit_bundle
from refrain.bundles.vae import load_vae_bundle
from refrain.errors import RefrainInputError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("compat"))


def as_format_1(bundle: Path, tmp_path: Path, model: dict) -> Path:
    """The layout refrain wrote before: Hydra ``_target_`` specs, a bundle hash over the file list only,
    and a VAE manifest without a bundle hash."""
    old = Path(shutil.copytree(bundle, tmp_path / "old"))
    vae = json.loads((old / "vae" / "manifest.json").read_text())
    vae.pop("bundle_hash")
    (old / "vae" / "manifest.json").write_text(json.dumps({**vae, "format_version": 1}))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.update(format_version=1, model=model)
    manifest["files"]["vae/manifest.json"] = hashlib.sha256(
        (old / "vae" / "manifest.json").read_bytes()
    ).hexdigest()
    manifest["bundle_hash"] = seal_hash(manifest)
    (old / "manifest.json").write_text(json.dumps(manifest))
    return old


def test_a_format_1_bundle_loads_the_same_weights(bundle: Path, tmp_path: Path) -> None:
    old = as_format_1(bundle, tmp_path, dict(TINY_DIT))
    model = open_dit_bundle(old).build_model()
    reference = open_dit_bundle(bundle).build_model()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    assert load_vae_bundle(old / "vae").manifest["format_version"] == 1
    edit_manifest(old, frame_rate=1.0)  # format 1 never covered the manifest: its files still are
    open_dit_bundle(old)


def test_a_format_1_bundle_naming_code_is_refused(bundle: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    old = as_format_1(
        bundle,
        tmp_path,
        issue_spec("refrain.training.run.instantiate", code_pickle(tmp_path / "x.pkl", marker)),
    )
    opened = open_dit_bundle(old)  # its hash is consistent: the file list did not change
    with pytest.raises(RefrainInputError, match="is not a model refrain builds from a file"):
        opened.build_model()
    assert not marker.exists()
