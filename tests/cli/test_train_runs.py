"""trainer.py end to end at tiny size: run folders, resume, validation-only, fine-tuning from a bundle, and
one-line errors for what a user gets wrong. One real DiT run (a subprocess, as a user starts it) is reused
by most tests; the others are short in-process runs through ``refrain.cli.train.main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from helpers.tiny_runs import common_overrides, dit_argv, make_world, train_in_process, vae_argv
from safetensors.torch import load_file

from refrain.cli.train import main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_world(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def dit_run(world: dict[str, Path]) -> dict[str, object]:
    """`python trainer.py ...` for 2 steps with TensorBoard; its console output and its folder."""
    run_dir = world["root"] / "dit_run"
    argv = [
        *dit_argv(world, run_dir, steps=2),
        "logger=tensorboard",
        "trainer.enable_model_summary=true",
        "trainer.log_every_n_steps=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(REPO / "trainer.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"dir": run_dir, "argv": argv, "out": done.stdout + done.stderr}


def assert_one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "Error in call to target" not in err, err[-2000:]
    return lines[0]


def test_console_prints_each_lightning_line_once_without_noise(dit_run: dict[str, object]) -> None:
    out = str(dit_run["out"])
    assert out.count("GPU available:") == 1, out
    assert "FLOPs" not in out and "litlogger" not in out and "Example:" not in out
    assert "285,712 trainable" in out  # refrain's parameter summary replaces Lightning's table


def test_reusing_a_run_name_is_refused_with_both_ways_forward(dit_run, capsys) -> None:
    before = sorted(p.name for p in (dit_run["dir"] / "checkpoints").iterdir())
    code, err = train_in_process(list(dit_run["argv"]), capsys)
    line = assert_one_line(err)
    assert code == 2 and "already holds a run (2 checkpoints)" in line
    assert f"--ckpt_path {dit_run['dir'] / 'checkpoints' / 'last.ckpt'}" in line and "--exp_name" in line
    assert sorted(p.name for p in (dit_run["dir"] / "checkpoints").iterdir()) == before


def test_resume_continues_curves_and_tensorboard_version(dit_run, capsys) -> None:
    run_dir = dit_run["dir"]
    last = run_dir / "checkpoints" / "last.ckpt"
    argv = [*dit_run["argv"], "--ckpt_path", str(last), "--max_steps", "4", "--every_n_train_steps", "4"]
    code, err = train_in_process(argv, capsys)
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in (run_dir / "logs" / "tensorboard").iterdir()) == ["version_0"]
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())  # a new cadence, still one last.ckpt
    assert names == ["last.ckpt", "step=00000002.ckpt", "step=00000004.ckpt"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    (curves,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("LossCurvePlot")]
    assert curves["train"]["train/loss"][:, 0].tolist() == [1, 2, 3, 4]  # steps 1-2 survived the resume
    assert curves["validation"]["val/flow"].shape[0] >= 2
    assert (run_dir / "plots" / "loss_curves.png").stat().st_size > 5000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "logs" / "tensorboard" / "version_0")).Reload()
    tags = events.Tags()["scalars"]
    assert {"lr/decayed", "lr/not_decayed"} <= set(tags) and not any("pg1" in t for t in tags)
    assert [e.step for e in events.Scalars("train/loss")][-1] >= 3  # one run, one version, both halves


def test_validate_only_reports_without_touching_the_run(dit_run, capsys) -> None:
    run_dir = dit_run["dir"]
    config = (run_dir / "config.yaml").read_text()
    versions = sorted((run_dir / "logs" / "tensorboard").iterdir())
    last = run_dir / "checkpoints" / "step=00000002.ckpt"
    try:
        main([*dit_run["argv"], "--validate_only", "--ckpt_path", str(last)])
    except SystemExit as stop:  # pragma: no cover - a failure shows its message
        pytest.fail(f"exit {stop.code}: {capsys.readouterr().err[-2000:]}")
    out = capsys.readouterr().out
    report = json.loads((run_dir / "validation" / "step=00000002.json").read_text())
    assert report["global_step"] == 2 and report["metrics"]["val/flow"] > 0
    assert "validation of" in out and "val/flow" in out
    assert (run_dir / "config.yaml").read_text() == config
    assert sorted((run_dir / "logs" / "tensorboard").iterdir()) == versions


def test_full_fine_tune_starts_from_the_bundle_weights(world, tmp_path, capsys) -> None:
    """--checkpoint_dir BUNDLE without a LoRA JSON: with learning rate 0, the trained weights ARE the bundle's."""
    run_dir = tmp_path / "fine_tune"
    argv = [*dit_argv(world, run_dir, steps=1), "--checkpoint_dir", str(world["dit"]), "--learning_rate", "0"]
    code, err = train_in_process(argv, capsys)
    assert code == 0, err[-2000:]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    bundle = load_file(str(world["dit"] / "dit.safetensors"))
    assert all(torch.equal(state[f"model.{k}"], v) for k, v in bundle.items())


def test_one_line_errors_for_recipes_and_inputs(world, tmp_path, capsys) -> None:
    base = dit_argv(world, tmp_path / "x", steps=1)
    without_data = [
        a for i, a in enumerate(base) if a != "--dataset_path" and base[i - 1] != "--dataset_path"
    ]
    code, err = train_in_process(without_data, capsys)
    assert code == 2 and "dataset_path" in assert_one_line(err)
    swapped = [
        str(world["dit"]) if a == str(world["vae"]) else a for a in base
    ]  # a DiT bundle as --vae_bundle
    code, err = train_in_process(swapped, capsys)
    assert code == 2 and "'dit', not 'vae'" in assert_one_line(err)
    spec = tmp_path / "acestep.json"
    targets = ["speaker_embedder", "linear_q", "linear_k", "linear_v", "to_q", "to_k", "to_v", "to_out.0"]
    spec.write_text(json.dumps({"r": 4, "lora_alpha": 4, "target_modules": targets}))
    lora = [
        "--checkpoint_dir",
        str(world["dit"]),
        "--lora_config_path",
        str(spec),
        "--dataset_path",
        str(world["dataset"]),
        *common_overrides(tmp_path / "lora"),
    ]  # ACE-Step's command line
    code, err = train_in_process(lora, capsys)
    line = assert_one_line(err)
    assert code == 2 and all(f"'{name}' matches nothing" in line for name in targets[:4])


def test_vae_run_errors_and_its_checkpoint_in_a_dit_run(world, tmp_path, capsys) -> None:
    code, err = train_in_process(
        [*vae_argv(world, tmp_path / "vae_acc"), "--accumulate_grad_batches", "2"], capsys
    )
    line = assert_one_line(err)
    assert code == 2 and "accumulate" in line and "--batch_size" in line
    code, err = train_in_process(
        [*vae_argv(world, tmp_path / "vae", steps=1), "--every_plot_step", "1"], capsys
    )
    assert code == 0, err[-2000:]
    heard = sf.info(tmp_path / "vae" / "plots" / "step_000001" / "reconstruction.wav")
    assert heard.duration > 2.9  # the whole 3 s validation song, not the 0.37 s training crop
    vae_ckpt = tmp_path / "vae" / "checkpoints" / "last.ckpt"
    code, err = train_in_process([*dit_argv(world, tmp_path / "dit"), "--ckpt_path", str(vae_ckpt)], capsys)
    line = assert_one_line(err)
    assert code == 2 and "VAETask checkpoint" in line and "DiTTask" in line and "--checkpoint_dir" in line
    assert "Missing key" not in err
    # A full fine-tune from a VAE bundle: exported from that run, trained at learning rate 0, unchanged.
    from refrain.bundles.export import export_vae
    from refrain.bundles.vae import load_vae_bundle

    bundle = export_vae(vae_ckpt, tmp_path / "vae_bundle")
    argv = [
        *vae_argv(world, tmp_path / "vae_ft", steps=1),
        "--checkpoint_dir",
        str(bundle),
        "--learning_rate",
        "0",
    ]
    code, err = train_in_process(argv, capsys)
    assert code == 0, err[-2000:]
    state = torch.load(tmp_path / "vae_ft" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    expected = load_vae_bundle(bundle).model.state_dict()
    assert all(torch.equal(state[f"model.{k}"], v) for k, v in expected.items())
    wider = [
        *vae_argv(world, tmp_path / "vae_other"),
        "--checkpoint_dir",
        str(bundle),
        "model.vae.decoder_channels=24",
    ]
    code, err = train_in_process(wider, capsys)
    line = assert_one_line(err)
    assert code == 2 and "do not fit model.vae" in line and "in the bundle" in line
    code, err = train_in_process(
        [*vae_argv(world, tmp_path / "vae_dit"), "--checkpoint_dir", str(world["dit"])], capsys
    )
    assert code == 2 and "is a DIT bundle but this run trains a VAE" in assert_one_line(err)


def test_nonfinite_stop_is_one_line_and_names_no_checkpoint_it_lacks(world, tmp_path, capsys) -> None:
    run_dir = tmp_path / "nan"
    argv = [
        *dit_argv(world, run_dir, steps=4),
        "--learning_rate",
        "inf",
        "--every_n_train_steps",
        "100",
        "callbacks.nonfinite.max_consecutive=1",
    ]
    code, err = train_in_process(argv, capsys)
    line = assert_one_line(err)
    assert code == 3 and "consecutive non-finite updates" in line and "no checkpoint was written yet" in line
    assert not list((run_dir / "checkpoints").glob("*.ckpt")) if (run_dir / "checkpoints").exists() else True


def test_bf16_mixed_trains_with_the_fused_adamw_and_clipping_of_the_dit_recipes(
    world, tmp_path, capsys, monkeypatch
) -> None:
    """experiment=dit_repa's settings (bf16-mixed, fused AdamW, gradient_clip_val 0.5): Lightning alone refuses
    to clip for a fused optimizer at the first step; the task clips the unscaled bf16 gradients itself."""
    import refrain.tasks.dit_task as dit_task

    clipped: list[bool] = []
    real = dit_task.clip_unscaled_gradients

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        clipped.append(real(*args, **kwargs))
        return clipped[-1]

    monkeypatch.setattr(dit_task, "clip_unscaled_gradients", spy)
    run_dir = tmp_path / "bf16"
    argv = [*dit_argv(world, run_dir, steps=2), "--precision", "bf16-mixed", "--gradient_clip_val", "0.5"]
    code, err = train_in_process(argv, capsys)
    assert code == 0, err[-2000:]
    assert clipped == [True, True] and (run_dir / "checkpoints" / "last.ckpt").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["task"]["optimizer"]["fused"] is True and config["trainer"]["precision"] == "bf16-mixed"


def test_a_sweep_gives_each_job_its_own_folder(world, tmp_path, capsys) -> None:
    run_dir = tmp_path / "sweep"
    sweep = ["learning_rate=0.001,0.002", f"hydra.sweep.dir={tmp_path / 'hydra'}"]
    argv = ["-m", *dit_argv(world, run_dir, steps=1), *sweep]
    code, err = train_in_process(argv, capsys)
    assert code == 0, err[-2000:]
    rates = {}
    for job in ("job0", "job1"):
        names = sorted(p.name for p in (run_dir / job / "checkpoints").iterdir())
        assert names == ["last.ckpt", "step=00000001.ckpt"]
        rates[job] = yaml.safe_load((run_dir / job / "config.yaml").read_text())["learning_rate"]
    assert rates == {"job0": 0.001, "job1": 0.002}
    assert not (run_dir / "checkpoints").exists()


def test_listening_plots_put_the_song_itself_beside_decode_and_sample(dit_run, world) -> None:
    """The DiT's 'reference' is the VAE's decode; the song's own audio must be there too (a bad VAE and a bad
    DiT would look the same otherwise)."""
    from refrain.audio.io import load_audio
    from refrain.data.schema import load_prepared

    folder = dit_run["dir"] / "plots" / "step_000002"
    assert {"original_0.flac", "reference_0.flac", "sample_0.flac", "spectrograms.png"} <= {
        p.name for p in folder.iterdir()
    }
    original, rate = sf.read(folder / "original_0.flac", dtype="float32", always_2d=True)
    record = load_prepared(world["dataset"])["validation"][0]
    song = load_audio(record["filename"], rate, 2, 0.0, original.shape[0] / rate).samples
    assert original.shape[0] == sf.info(folder / "reference_0.flac").frames
    assert abs(original.T - song).max() < 1e-3  # the song's own first seconds (FLAC is 16/24-bit)


def test_acestep_lora_command_line_with_batch_size(world, tmp_path, capsys) -> None:
    """ACE-Step users type --batch_size; on ACE-Step's own LoRA command line it sets data.batch_size."""
    spec = tmp_path / "plain.json"
    spec.write_text(json.dumps({"r": 4, "lora_alpha": 4}))
    run_dir = tmp_path / "lora"
    argv = [
        "--checkpoint_dir",
        str(world["dit"]),
        "--lora_config_path",
        str(spec),
        "--dataset_path",
        str(world["dataset"]),
        "--batch_size",
        "2",
        "--max_steps",
        "1",
        "data.max_frames=32",
        *common_overrides(run_dir),
    ]
    code, err = train_in_process(argv, capsys)
    assert code == 0, err[-2000:]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["batch_size"] == 2
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
