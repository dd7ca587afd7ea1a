"""The README's Stable Audio Open commands over a tiny release folder: full fine-tune with trainer.py, the
trained weights as a refrain bundle (refrain-infer, the base of a LoRA run) and as a diffusers folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import StableAudioDiTModel, StableAudioPipeline
from helpers.stable_audio import cached_release
from helpers.tiny_runs import release_world, train_in_process

from refrain.cli.stable_audio import main as sao_cli

pytestmark = pytest.mark.slow
RECIPE = [
    "--shift",
    "1",
    "task.loss.logit_std=1.5708",
    "task.loss.drop_style_prob=0.1",
    "task.loss.drop_lyrics_prob=0",
    "task.loss.masked_span_prob=0",
]
COMMON = [
    "--max_steps",
    "2",
    "--every_n_train_steps",
    "2",
    "--every_plot_step",
    "1000",
    "data.batch_size=2",
    "data.max_frames=32",
    "data.val_items=1",
    "logger=csv",
    "callbacks.progress=null",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "num_workers=0",
]
KEY = "transformer_blocks.0.attn1.to_q.weight"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    release = cached_release(tmp_path_factory.getbasetemp())
    return release_world(tmp_path_factory.mktemp("sao_runs"), release, 44100, sao_cli)


def test_full_fine_tune_bundle_infer_and_diffusers_export(world, capsys) -> None:
    from refrain.cli.infer import main as infer_main

    root, release = world["root"], str(world["release"])
    code, err = train_in_process(
        [
            "task=dit",
            "data=latents",
            "model/dit=stable_audio_open",
            f"model.dit.checkpoint_dir={release}",
            "model.dit.repa_layer=2",
            "--vae_bundle",
            str(world["vae"]),
            "--dataset_path",
            str(world["dataset"]),
            f"run_dir={root / 'full'}",
            "--learning_rate",
            "0.01",
            *RECIPE,
            *COMMON,
        ],
        capsys,
    )
    assert code == 0, err[-2000:]
    ckpt = root / "full" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]
    released = StableAudioDiTModel.from_pretrained(world["release"] / "transformer").state_dict()
    assert not torch.equal(state[f"model.transformer.{KEY}"], released[KEY])  # trained from the release
    assert list(
        (world["dataset"] / "cache" / "stable_audio_t5").rglob("*.safetensors")
    )  # T5 states cached once

    sao_cli(
        [
            "bundle",
            "--checkpoint_dir",
            release,
            "--vae_bundle",
            str(world["vae"]),
            "--ckpt",
            str(ckpt),
            "--output",
            str(root / "bundle"),
        ]
    )
    out = root / "song.flac"
    argv = [
        "text2music",
        "--bundle",
        str(root / "bundle"),
        "--prompt",
        "dreamy synth pop",
        "--duration",
        "1.0",
        "--seed",
        "3",
        "--steps",
        "4",
        "--out",
        str(out),
        "--no_progress",
    ]
    assert infer_main(argv) in (0, None), capsys.readouterr().err[-2000:]
    options = json.loads(out.with_suffix(".json").read_text())["options"]
    assert options["guidance"] == "cfg" and options["guidance_scale"] == 7.0 and options["shift"] == 1.0
    code = infer_main(
        [
            "repaint",
            "--bundle",
            str(root / "bundle"),
            "--source",
            str(out),
            "--start",
            "0.2",
            "--end",
            "0.6",
            "--prompt",
            "x",
            "--out",
            str(root / "r.flac"),
            "--no_progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "does not support a context latent" in err and "Traceback" not in err

    sao_cli(["export", "--checkpoint_dir", release, "--ckpt", str(ckpt), "--output", str(root / "diffusers")])
    exported = StableAudioPipeline.from_pretrained(root / "diffusers").transformer.state_dict()
    assert torch.equal(exported[KEY], state[f"ema.shadow.transformer.{KEY}"])  # the EMA weights
    world["bundle"] = root / "bundle"


def test_lora_run_on_the_bundle_and_its_merged_export(world, capsys) -> None:
    if "bundle" not in world:
        pytest.skip("needs the bundle of the test above")
    root, release = world["root"], str(world["release"])
    code, err = train_in_process(
        [
            "--checkpoint_dir",
            str(world["bundle"]),
            "--lora_config_path",
            str(root / "lora.json"),
            "--dataset_path",
            str(world["dataset"]),
            f"run_dir={root / 'lora'}",
            "--learning_rate",
            "0.05",
            "task.lr_schedule.warmup_steps=1",
            *RECIPE,
            *COMMON,
        ],
        capsys,
    )
    assert code == 0, err[-2000:]
    adapter = root / "lora" / "adapter"
    sao_cli(
        ["export", "--checkpoint_dir", release, "--adapter", str(adapter), "--output", str(root / "merged")]
    )
    merged = StableAudioDiTModel.from_pretrained(root / "merged" / "transformer").state_dict()
    base = StableAudioDiTModel.from_pretrained(world["release"] / "transformer").state_dict()
    assert not torch.equal(merged[KEY], base[KEY])  # the adapter was merged in
    code, err = train_in_process(
        [
            "--checkpoint_dir",
            str(world["bundle"]),
            "--lora_config_path",
            str(root / "lora.json"),
            "--dataset_path",
            str(world["dataset"]),
            f"run_dir={root / 'bad'}",
            "--max_steps",
            "1",
            "trainer.accelerator=cpu",
            "num_workers=0",
        ],
        capsys,
    )
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "drop_lyrics_prob" in lines[0] and "Traceback" not in err
