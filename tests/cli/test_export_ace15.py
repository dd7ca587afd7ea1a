"""refrain-export --kind dit on a model/dit=ace15 run writes the release with the run's weights as a diffusers
folder that refrain-infer and AceStepPipeline open; flags that do not apply and a moved release are one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AceStepTransformer1DModel
from helpers.ace15 import ace15_release  # noqa: F401

from refrain.bundles.export import CHECKPOINT_FORMAT_VERSION
from refrain.cli.export import main as export_main
from refrain.cli.infer import main as infer_main
from refrain.models.backbones.ace15 import load_ace15
from refrain.sampling.pipeline import Pipeline

KEY = "transformer.layers.0.self_attn.to_q.weight"


def _checkpoint(path: Path, release: Path) -> Path:
    """What a model/dit=ace15 run's last.ckpt holds: live weights, the EMA, the resolved config."""
    base = load_ace15(release).state_dict()
    g = torch.Generator().manual_seed(0)
    state = {f"model.{k}": v + 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    state.update({f"ema.shadow.{k}": v + 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items()})
    config = {
        "model": {
            "dit": {
                "_target_": "refrain.models.backbones.ace15.load_ace15",
                "checkpoint_dir": str(release),
                "repa_layer": None,
                "turbo": False,
                "dataset_path": None,
            }
        },
        "checkpoint_dir": str(release),
        "vae_bundle": "exps/ace15_vae",
        "dataset_path": "data/songs",
    }
    meta = {"config": config, "format_version": CHECKPOINT_FORMAT_VERSION}
    torch.save({"state_dict": state, "refrain": meta, "global_step": 3, "epoch": 0}, path)
    return path


@pytest.mark.slow  # two exports and a sampled song: about 7 s
def test_refrain_export_writes_a_folder_refrain_infer_opens(
    ace15_release: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = _checkpoint(tmp_path / "last.ckpt", ace15_release)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    out = tmp_path / "ace15_full"
    assert export_main(["--kind", "dit", "--checkpoint", str(ckpt), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"exported ace15 run as a diffusers folder (refrain-infer --bundle, AceStepPipeline): {out}"
    )
    exported = AceStepTransformer1DModel.from_pretrained(out / "transformer").state_dict()
    assert torch.equal(
        exported["layers.0.self_attn.to_q.weight"], state[f"ema.shadow.{KEY}"]
    )  # EMA by default
    model = Pipeline.from_release(out).model.state_dict()
    assert all(torch.equal(model[k], state[f"ema.shadow.{k}"]) for k in model)
    raw = tmp_path / "raw"
    assert (
        export_main(["--kind", "dit", "--checkpoint", str(ckpt), "--output", str(raw), "--raw_weights"]) == 0
    )
    live = AceStepTransformer1DModel.from_pretrained(raw / "transformer").state_dict()
    assert torch.equal(live["layers.0.self_attn.to_q.weight"], state[f"model.{KEY}"])
    song = tmp_path / "song.flac"
    assert (
        infer_main(
            [
                "text2music",
                "--bundle",
                str(out),
                "--prompt",
                "synth pop",
                "--duration",
                "1",
                "--seed",
                "0",
                "--steps",
                "2",
                "--out",
                str(song),
            ]
        )
        == 0
    )
    assert song.is_file()


def test_what_does_not_apply_is_one_line(
    ace15_release: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    moved = tmp_path / "release"
    shutil.copytree(ace15_release, moved)
    ckpt = _checkpoint(tmp_path / "last.ckpt", moved)
    argv = ["--kind", "dit", "--checkpoint", str(ckpt), "--output", str(tmp_path / "out")]
    assert export_main([*argv, "--vae_bundle", "v"]) == 2
    assert "--vae_bundle: do not apply to an ACE-Step 1.5 run" in capsys.readouterr().err
    shutil.rmtree(moved)
    assert export_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint_dir" in err and not (tmp_path / "out").exists()
