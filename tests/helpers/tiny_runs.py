"""A tiny world for whole-run CLI tests: a prepared dataset, a VAE bundle and a DiT bundle, made in code.

Four 3 s songs in ACE-Step's folder layout are prepared with ``prepare_dataset``; the VAE bundle is the
sampler tests' tiny Oobleck (16 latent channels); the DiT bundle is exported from a checkpoint of the
tiny DiT preset over that dataset's vocabulary. ``dit_argv``/``vae_argv`` are the trainer.py command
lines (ACE-Step flags + Hydra overrides) that train them for a few steps in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

LYRICS = "[verse]\nhello night city lights\nwe are singing all the way home\n"
TINY_DIT_OVERRIDES = [
    "model/dit=tiny",
    "model.dit.config.latent_channels=16",
    "model.dit.config.lyric_vocab_size=256",
]


def write_songs(root: Path, count: int = 4, seconds: float = 3.0, rate: int = 44100) -> Path:
    """ACE-Step's layout: x.wav + x_prompt.txt + x_lyrics.txt (tones with a little noise)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for index in range(count):
        tone = 0.3 * np.sin(2 * np.pi * (220 + 55 * index) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(root / f"song{index}.wav", np.stack([tone, 0.8 * tone]).T.astype(np.float32), rate)
        (root / f"song{index}_prompt.txt").write_text("synth pop, 120 bpm" if index % 2 else "hip hop, rap")
        (root / f"song{index}_lyrics.txt").write_text(LYRICS)
    return root


def make_world(root: Path) -> dict[str, Path]:
    """dataset (prepared), vae (bundle), dit (bundle over the dataset's vocabulary), under ``root``."""
    from helpers.bundles import save_checkpoint, save_vae
    from refrain.bundles.export import export_dit
    from refrain.config import compose_config
    from refrain.data.prepare import PrepareOptions, prepare_dataset

    dataset = root / "dataset"
    prepare_dataset(
        PrepareOptions(
            output_dir=dataset, input_dir=write_songs(root / "songs"), val_fraction=0.25, progress=False
        )
    )
    save_vae(root / "vae")
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(compose_config(TINY_DIT_OVERRIDES).model.dit, resolve=True)
    checkpoint = save_checkpoint(
        root / "dit_source.ckpt", spec, root / "vae", dataset, text_max_length=32, global_step=3
    )
    export_dit(checkpoint, root / "dit", use_ema=False)
    return {"root": root, "dataset": dataset, "vae": root / "vae", "dit": root / "dit"}


def common_overrides(run_dir: Path) -> list[str]:
    return [
        f"run_dir={run_dir}",
        "logger=csv",
        "callbacks.progress=null",
        "trainer.accelerator=cpu",
        "trainer.enable_model_summary=false",
        "trainer.enable_progress_bar=false",
        "num_workers=0",
    ]


def step_flags(steps: int) -> list[str]:
    """Stop after ``steps`` steps, checkpoint at the last one, never plot: what every tiny run sets."""
    return ["--max_steps", str(steps), "--every_n_train_steps", str(steps), "--every_plot_step", "1000"]


def dit_argv(world: dict[str, Path], run_dir: Path, steps: int = 2) -> list[str]:
    """A few steps of the tiny DiT on the world's dataset, conditioning encoded online (cached on first use)."""
    return [
        "experiment=demo_dit",
        "~repa",
        *TINY_DIT_OVERRIDES,
        "--dataset_path",
        str(world["dataset"]),
        "--vae_bundle",
        str(world["vae"]),
        *step_flags(steps),
        "data.batch_size=2",
        "data.max_frames=32",
        "data.val_items=1",
        "data.storage.text_max_length=32",
        "task.ema=null",
        "trainer.val_check_interval=null",
        "+trainer.limit_val_batches=1",
        "trainer.check_val_every_n_epoch=1",
        *common_overrides(run_dir),
    ]


def vae_argv(world: dict[str, Path], run_dir: Path, steps: int = 2) -> list[str]:
    """A few steps of the demo VAE recipe on the world's dataset with the tiny preset."""
    return [
        "experiment=demo_vae",
        "model/vae=tiny",
        "--dataset_path",
        str(world["dataset"]),
        *step_flags(steps),
        "data.crop_samples=16384",
        "data.val_items=1",
        "trainer.val_check_interval=null",
        "+trainer.limit_val_batches=1",
        "trainer.check_val_every_n_epoch=1",
        *common_overrides(run_dir),
    ]


def release_world(
    root: Path, release: Path, rate: int, release_cli: Callable[[list[str]], object]
) -> dict[str, Path]:
    """A released backbone's run world: songs at the release's rate prepared into ``dataset``, the release's
    VAE written as a refrain bundle by its CLI's ``vae`` command, and a small LoRA config (``lora.json``)."""
    from refrain.data.prepare import PrepareOptions, prepare_dataset

    songs = write_songs(root / "songs", rate=rate)
    prepare_dataset(
        PrepareOptions(output_dir=root / "dataset", input_dir=songs, val_fraction=0.25, progress=False)
    )
    release_cli(["vae", "--checkpoint_dir", str(release), "--output", str(root / "vae")])
    (root / "lora.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "target_modules": ["to_q", "to_v"]}))
    return {"root": root, "release": release, "dataset": root / "dataset", "vae": root / "vae"}


def ace15_run_argv(
    world: dict[str, Path], run_dir: Path, steps: int = 2, max_frames: int = 32, lora: Path | None = None
) -> list[str]:
    """trainer.py flags for a few CPU steps on a tiny ACE-Step 1.5 release world (``release_world``), with
    the released recipe's loss settings (shift 1, logit mean -0.4, no lyric-only drop); ``lora`` = a LoRA run."""
    adapter = ["--lora_config_path", str(lora)] if lora is not None else []
    return [
        "--checkpoint_dir",
        str(world["release"]),
        "--vae_bundle",
        str(world["vae"]),
        *adapter,
        "--dataset_path",
        str(world["dataset"]),
        *step_flags(steps),
        "--shift",
        "1",
        "task.loss.logit_mean=-0.4",
        "task.loss.drop_lyrics_prob=0",
        "data.batch_size=2",
        f"data.max_frames={max_frames}",
        "data.val_items=1",
        *common_overrides(run_dir),
    ]


def train_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of an in-process trainer.py call."""
    from refrain.cli.train import main

    try:
        main(argv)
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err.strip()
