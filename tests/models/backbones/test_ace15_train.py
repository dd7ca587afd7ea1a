"""trainer.py over a (tiny) ACE-Step 1.5 release folder: LoRA and full fine-tune, as a user types them.

The dataset is prepared by refrain-prepare's function from 48 kHz songs, its latents come from the release's
own VAE written as a refrain VAE bundle (``python -m refrain.cli.ace15 vae``), and the backbone builds its
Qwen3 conditioning from each batch's prompt and lyrics text (online; nothing to cache first).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.tiny_runs import ace15_run_argv, release_world, train_in_process
from safetensors.torch import load_file

from refrain.cli.ace15 import main as ace15_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(ace15_release: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return release_world(tmp_path_factory.mktemp("ace15_runs"), ace15_release, 48000, ace15_cli)


def test_lora_run_from_the_release_folder_writes_a_transformer_adapter(world, capsys) -> None:
    run_dir = world["root"] / "lora_run"
    code, err = train_in_process(
        [
            *ace15_run_argv(world, run_dir, lora=world["root"] / "lora.json"),
            "--learning_rate",
            "0.05",
            "task.lr_schedule.warmup_steps=1",
        ],
        capsys,
    )
    assert code == 0, err[-2000:]
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert weights and all(".transformer." in k and ".lora_" in k for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # two steps moved the adapter
    world["adapter"] = run_dir / "adapter"
    assert list((world["dataset"] / "cache" / "ace15_text").rglob("*.safetensors"))  # Qwen3 outputs cached


def test_the_adapter_reaches_diffusers_as_a_lora_file_and_as_a_merged_folder(world, capsys) -> None:
    from diffusers import AceStepPipeline

    if "adapter" not in world:
        pytest.skip("needs the LoRA run of the test above")
    release, out = str(world["release"]), world["root"]
    ace15_cli(
        [
            "lora",
            "--checkpoint_dir",
            release,
            "--adapter",
            str(world["adapter"]),
            "--output",
            str(out / "lora"),
        ]
    )
    ace15_cli(
        [
            "export",
            "--checkpoint_dir",
            release,
            "--adapter",
            str(world["adapter"]),
            "--output",
            str(out / "merged"),
        ]
    )
    noise = torch.randn(1, 25, 8, generator=torch.Generator().manual_seed(0))
    args = {
        "prompt": "synth pop",
        "lyrics": "[verse]\nhello",
        "audio_duration": 1.0,
        "guidance_scale": 1.0,
        "output_type": "latent",
    }
    pipe = AceStepPipeline.from_pretrained(release)
    pipe.set_progress_bar_config(disable=True)
    base = pipe(**args, latents=noise.clone()).audios
    pipe.load_lora_weights(out / "lora")
    with_lora = pipe(**args, latents=noise.clone()).audios
    merged = AceStepPipeline.from_pretrained(out / "merged")
    merged.set_progress_bar_config(disable=True)
    assert (with_lora - base).abs().max() > 1e-4
    assert (merged(**args, latents=noise.clone()).audios - with_lora).abs().max() < 1e-5


def test_full_fine_tune_trains_every_weight(world, capsys) -> None:
    run_dir = world["root"] / "full_run"
    code, err = train_in_process(
        [
            "task=dit",
            "data=latents",
            "model/dit=ace15",
            "model.dit.repa_layer=2",
            *ace15_run_argv(world, run_dir),
        ],
        capsys,
    )
    assert code == 0, err[-2000:]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")[
        "state_dict"
    ]
    from refrain.models.backbones.ace15 import load_ace15

    released = load_ace15(world["release"]).state_dict()
    key = "transformer.layers.0.self_attn.to_q.weight"
    assert not torch.equal(state[f"model.{key}"], released[key])  # trained from the release's weights
    assert (state[f"model.{key}"] - released[key]).abs().max() < 0.05
    from diffusers import AceStepTransformer1DModel

    out = world["root"] / "full_export"
    ace15_cli(
        [
            "export",
            "--checkpoint_dir",
            str(world["release"]),
            "--ckpt",
            str(run_dir / "checkpoints" / "last.ckpt"),
            "--output",
            str(out),
        ]
    )
    exported = AceStepTransformer1DModel.from_pretrained(out / "transformer").state_dict()
    assert torch.equal(exported["layers.0.self_attn.to_q.weight"], state[f"ema.shadow.{key}"])  # EMA weights
    from refrain.sampling.pipeline import Pipeline

    reopened = Pipeline.from_release(out).model.state_dict()  # the export is a folder refrain samples from
    ema = {k.removeprefix("ema.shadow."): v for k, v in state.items() if k.startswith("ema.shadow.")}
    assert reopened.keys() == ema.keys() and all(torch.equal(reopened[k], ema[k]) for k in ema)


def test_what_the_backbone_cannot_do_is_one_line(world, capsys) -> None:
    code, err = train_in_process(
        [
            "--checkpoint_dir",
            str(world["release"]),
            "--vae_bundle",
            str(world["vae"]),
            "--lora_config_path",
            str(world["root"] / "lora.json"),
            "--dataset_path",
            str(world["dataset"]),
            f"run_dir={world['root'] / 'bad'}",
            "--max_steps",
            "1",
            "trainer.accelerator=cpu",
            "num_workers=0",
        ],
        capsys,
    )
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "drop_lyrics_prob" in lines[0] and "Traceback" not in err
