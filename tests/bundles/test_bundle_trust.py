"""Issue 10: nothing in a bundle or a checkpoint config runs code, through the real CLIs at tiny size.

Each crafted file is what an attacker (or a careless converter) could ship: the issue's manifest, its
variants against the registry's names, a shard beside the listed weights, a pickled VAE weight file.
A marker file stands in for the code a crafted pickle would run; it must never appear.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.bundles import make_tiny_bundle
from helpers.untrusted import code_pickle, edit_manifest, issue_spec
from safetensors.torch import load_file, save_file

from refrain.bundles.dit import open_dit_bundle
from refrain.bundles.vae import load_vae_bundle
from refrain.cli.infer import main as infer_main
from refrain.errors import RefrainInputError

FAST = ["--steps", "2", "--guidance", "cfg", "--guidance_scale", "3", "--no_progress"]
TARGETS = ["refrain.train.instantiate", "refrain.training.run.instantiate", "hydra.utils.instantiate"]
VAE_WEIGHTS = "vae/vae/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("trust"))


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def infer(bundle: Path, out: Path, *extra: str) -> int:
    argv = ["text2music", "--bundle", str(bundle), "--prompt", "pop", "--duration", "0.5", "--seed", "1"]
    return infer_main([*argv, "--out", str(out), *FAST, *extra])


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("how", ["edited", "resealed", "no_verify"])
def test_the_issue_manifest_runs_no_code_through_refrain_infer(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, how: str
) -> None:
    """The issue's manifest, as given (edited), with the bundle hash recomputed by the attacker (resealed),
    and with verification switched off: refused in one line, the pickle never opened."""
    marker = tmp_path / "pwned"
    spec = issue_spec(target, code_pickle(tmp_path / "x.pkl", marker))
    edit_manifest(copy, reseal=how != "edited", model=spec)
    extra = ["--no_verify"] if how == "no_verify" else []
    assert infer(copy, tmp_path / "song.flac", *extra) == 2
    err = one_line_error(capsys)
    if how == "edited":
        assert "manifest edited after export" in err
    else:
        assert "manifest.json model._target_" in err and "re-export" in err
    assert not marker.exists() and not (tmp_path / "song.flac").exists()


VARIANTS = {
    "nested_in_a_registered_constructor": lambda p: {"class": "lora_adapted_dit", "base": issue_spec("x", p)},
    "as_an_argument": lambda p: {"class": "dit", "hidden_size": issue_spec("torch.load", p)},
    "registry_key_names_a_callable": lambda p: {"class": "refrain.training.run.instantiate", "config": {}},
    "hydra_positional_args": lambda p: {"class": "dit", "_args_": [str(p)]},
    "partial_of_a_known_target": lambda p: {
        "_target_": "refrain.models.dit.transformer.DiffusionTransformer",
        "_partial_": True,
    },
    "unknown_argument": lambda p: {"class": "dit", "latent_channels": 16, "loader": str(p)},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_against_the_registry_names_are_refused(copy: Path, tmp_path: Path, variant: str) -> None:
    marker = tmp_path / "pwned"
    spec = VARIANTS[variant](code_pickle(tmp_path / "x.pkl", marker))
    edit_manifest(copy, reseal=True, model=spec)
    with pytest.raises(RefrainInputError, match=r"manifest\.json model") as caught:
        open_dit_bundle(copy).build_model()
    assert "\n" not in str(caught.value) and "Fix: re-export" in str(caught.value)
    assert not marker.exists()


def test_a_changed_manifest_fails_verification(copy: Path) -> None:
    manifest = json.loads((copy / "manifest.json").read_text())
    edit_manifest(copy, model={**manifest["model"], "num_layers": 1})
    with pytest.raises(RefrainInputError, match="bundle_hash does not match the manifest"):
        open_dit_bundle(copy)
    edit_manifest(copy, model=manifest["model"], frame_rate=21.5)
    with pytest.raises(RefrainInputError, match="manifest edited after export"):
        open_dit_bundle(copy)
    edit_manifest(copy, frame_rate=manifest["frame_rate"])
    open_dit_bundle(copy).build_model()  # the original manifest verifies again


def test_refrain_export_refuses_a_checkpoint_config_that_names_code(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checkpoint passes weights_only (its config is plain data) but names instantiate as the model."""
    from refrain.cli.export import main as export_main

    root = bundle.parent
    checkpoint = torch.load(root / "last.ckpt", weights_only=True)
    marker = tmp_path / "pwned"
    checkpoint["refrain"]["config"]["model"]["dit"] = issue_spec(
        "refrain.training.run.instantiate", code_pickle(tmp_path / "x.pkl", marker)
    )
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    out = tmp_path / "out"
    assert export_main(["--kind", "dit", "--checkpoint", str(crafted), "--output", str(out)]) == 2
    err = one_line_error(capsys)
    assert "config model.dit._target_" in err and str(crafted) in err
    assert not marker.exists() and not out.exists()


def _shard_beside(folder: Path, scale: float) -> dict[str, torch.Tensor]:
    """diffusers' sharded layout next to the listed single file, holding other weights."""
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    other = {k: v * scale for k, v in state.items()}
    shard = "diffusion_pytorch_model-00001-of-00001.safetensors"
    save_file(other, str(folder / shard), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": dict.fromkeys(other, shard)}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    return state


def test_a_listed_path_outside_the_bundle_is_refused(copy: Path) -> None:
    files = json.loads((copy / "manifest.json").read_text())["files"]
    edit_manifest(copy, reseal=False, files={**files, "../../etc/hostname": "0" * 64})
    with pytest.raises(RefrainInputError, match="a path outside the bundle folder"):
        open_dit_bundle(copy)


def test_an_unlisted_shard_beside_the_listed_weights_is_refused(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = _shard_beside(copy / "vae" / "vae", scale=0.0)
    assert infer(copy, tmp_path / "song.flac") == 2
    err = one_line_error(capsys)
    assert "diffusion_pytorch_model.safetensors.index.json" in err and "not listed in its manifest" in err
    with pytest.raises(RefrainInputError, match="not listed in its manifest"):
        load_vae_bundle(copy / "vae")
    # without verification only the listed file is read, by name
    loaded = load_vae_bundle(copy / "vae", verify=False).model.autoencoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in listed.items())


def test_a_pickled_bin_vae_weight_file_is_refused_in_one_line(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A converter's pickled .bin instead of safetensors, the bundle resealed: one line naming safetensors."""
    marker = tmp_path / "pwned"
    weights = copy / VAE_WEIGHTS
    state = load_file(str(weights))
    weights.unlink()
    torch.save({**state, "payload": torch.zeros(1)}, weights.with_suffix(".bin"))
    code_pickle(weights.with_suffix(".bin"), marker)
    edit_manifest(copy / "vae", reseal=True)
    edit_manifest(copy, reseal=True)
    assert infer(copy, tmp_path / "song.flac") == 2
    err = one_line_error(capsys)
    assert "diffusion_pytorch_model.bin" in err and "safetensors" in err
    assert not marker.exists()


def test_bundle_files_are_readable_by_others(bundle: Path) -> None:
    """fileio's promise: files 0644, folders 0755 (the VAE weights were written 0600)."""
    paths = [bundle, *bundle.rglob("*")]
    modes = {p.relative_to(bundle.parent).as_posix(): p.stat().st_mode & 0o777 for p in paths}
    assert modes[f"{bundle.name}/{VAE_WEIGHTS}"] == 0o644
    assert {m for p, m in modes.items() if Path(bundle.parent / p).is_file()} == {0o644}
    assert {m for p, m in modes.items() if Path(bundle.parent / p).is_dir()} == {0o755}
    standalone = bundle.parent / "vae_bundle"
    assert (standalone / "vae" / "diffusion_pytorch_model.safetensors").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_a_lora_run_on_a_crafted_base_bundle_runs_no_code(
    copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ACE-Step's command line: trainer.py --checkpoint_dir BUNDLE --lora_config_path X.json (resealed bundle)."""
    from refrain.cli.train import main as train_main
    from refrain.config import conf_dir

    marker = tmp_path / "pwned"
    spec = issue_spec("refrain.training.run.instantiate", code_pickle(tmp_path / "x.pkl", marker))
    edit_manifest(copy, reseal=True, model=spec)
    (tmp_path / "data").mkdir()
    argv = [
        "--checkpoint_dir",
        str(copy),
        "--lora_config_path",
        str(conf_dir().parent / "lora_configs" / "text2sample.json"),
        "--dataset_path",
        str(tmp_path / "data"),
        "--max_steps",
        "1",
        f"run_dir={tmp_path / 'run'}",
        "logger=csv",
        "trainer.accelerator=cpu",
    ]
    with pytest.raises(SystemExit) as exit_code:
        train_main(argv)
    assert exit_code.value.code == 2
    err = one_line_error(capsys)
    assert "model._target_" in err and "re-export" in err
    assert not marker.exists()


@pytest.mark.parametrize("crafted", [False, True])
def test_a_released_vae_folder_with_pickled_weights_is_refused_in_one_line(
    tmp_path: Path, tiny_vae: torch.nn.Module, tiny_config: dict, crafted: bool
) -> None:
    """model.vae.pretrained_path: a release folder shipping diffusion_pytorch_model.bin (honest or not)."""
    from refrain.models.vae.oobleck import build_oobleck_vae

    folder, marker = tmp_path / "release" / "vae", tmp_path / "pwned"
    tiny_vae.autoencoder.save_pretrained(folder, safe_serialization=False)
    assert (folder / "diffusion_pytorch_model.bin").is_file()
    if crafted:
        code_pickle(folder / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(RefrainInputError, match="pickled weights are refused") as caught:
        build_oobleck_vae(**tiny_config, pretrained_path=str(tmp_path / "release"))
    message = str(caught.value)
    assert "\n" not in message and "diffusion_pytorch_model.bin" in message and "safetensors" in message
    assert not marker.exists()
