"""The commands of the README's "Fine-tune DiffRhythm" section, end to end on a tiny random release:
refrain-import-diffrhythm -> trainer.py (model/dit=diffrhythm_1b, data=diffrhythm) -> refrain-export ->
python -m refrain.cli.diffrhythm sample; the exported bundle rebuilds the trained weights; then a LoRA on
that bundle with trainer.py (experiment=diffrhythm_lora) and sampling with its adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile
import torch
from helpers.diffrhythm import tiny_diffrhythm, write_dataset
from safetensors.torch import load_file

from refrain.bundles.dit import open_dit_bundle
from refrain.bundles.vae import save_vae_bundle
from refrain.cli.diffrhythm import main as sample_main
from refrain.cli.export import main as export_main
from refrain.cli.import_diffrhythm import main as import_main
from refrain.cli.train import main as train_main
from refrain.models.vae.oobleck import build_oobleck_vae

pytestmark = pytest.mark.slow
SIZES = [
    "+model.dit.dim=32",
    "+model.dit.depth=4",
    "+model.dit.heads=4",
    "+model.dit.dim_head=8",
    "+model.dit.ff_mult=2",
    "model.dit.max_frames=64",
    "model.dit.repa_layer=2",
    "+model.dit.vocab_size=20",
    "+model.dit.conv_layers=2",
]
VAE = {
    "sample_rate": 44100,
    "hop_length": 2048,
    "latent_channels": 64,
    "audio_channels": 2,
    "downsampling_ratios": [4, 8, 8, 8],
    "channel_multiples": [1, 1, 1, 1],
    "encoder_hidden_size": 128,
    "decoder_channels": 8,
    "chunk_seconds": 2.0,
    "overlap_seconds": 0.5,
}


def test_import_train_export_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scp = write_dataset(tmp_path / "dataset")
    release = tiny_diffrhythm(latent_dim=64, max_frames=64, text_dim=512)
    ema = {f"ema_model.transformer.{k}": v for k, v in release.state_dict().items()}
    torch.save({"ema_model_state_dict": ema}, tmp_path / "cfm_model.pt")
    torch.manual_seed(0)
    save_vae_bundle(tmp_path / "vae", build_oobleck_vae(**VAE).autoencoder, {"model": {"vae": VAE}})
    assert import_main(["--scp", str(scp), "--output", str(tmp_path / "imported")]) == 0
    run = tmp_path / "run"
    argv = [
        "model/dit=diffrhythm_1b",
        "data=diffrhythm",
        "task=dit",
        f"model.dit.checkpoint={tmp_path / 'cfm_model.pt'}",
        *SIZES,
        "--dataset_path",
        str(tmp_path / "imported"),
        "--vae_bundle",
        str(tmp_path / "vae"),
        "--shift",
        "1",
        "task.loss.masked_span_prob=0",
        "task.plotter=null",
        "repa=null",
        "--max_steps",
        "2",
        "--batch_size",
        "2",
        f"run_dir={run}",
        "logger=csv",
        "callbacks.progress=null",
        "trainer.accelerator=cpu",
        "num_workers=0",
        "trainer.enable_progress_bar=false",
    ]
    try:
        train_main(argv)
    except SystemExit as stop:
        assert not stop.code, capsys.readouterr().err
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (
        export_main(
            [
                "--kind",
                "dit",
                "--checkpoint",
                str(run / "checkpoints" / "last.ckpt"),
                "--output",
                str(tmp_path / "bundle"),
                "--raw_weights",
            ]
        )
        == 0
    )
    model = open_dit_bundle(tmp_path / "bundle").build_model()
    trained = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(model.proj_out.weight, trained["model.proj_out.weight"])
    assert not torch.equal(model.proj_out.weight, release.proj_out.weight)  # the run changed the release
    torch.save(torch.randn(1, 512), tmp_path / "style.pt")
    torch.save({"time": [0.3, 1.2], "lrc": [[10, 11, 2], [13]]}, tmp_path / "lrc.pt")
    song = tmp_path / "song.wav"
    code = sample_main(
        [
            "sample",
            "--bundle",
            str(tmp_path / "bundle"),
            "--style",
            str(tmp_path / "style.pt"),
            "--lyrics",
            str(tmp_path / "lrc.pt"),
            "--seconds",
            "2",
            "--output",
            str(song),
        ]
    )
    assert code == 0 and "31 Euler steps" in capsys.readouterr().out
    audio, rate = soundfile.read(song)
    assert rate == 44100 and audio.shape[1] == 2 and audio.shape[0] >= 2 * 44100 - 2048
    latent = load_file(str(song.with_suffix(".latent.safetensors")))["latent"]
    assert latent.shape == (64, 44) and torch.isfinite(latent).all()
    # LoRA on the exported bundle through the same command line, then sampling with the adapter
    (tmp_path / "lora.json").write_text('{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}')
    lora_run = tmp_path / "lora_run"
    try:
        train_main(
            [
                "experiment=diffrhythm_lora",
                "data=diffrhythm",
                "--checkpoint_dir",
                str(tmp_path / "bundle"),
                "--lora_config_path",
                str(tmp_path / "lora.json"),
                "--dataset_path",
                str(tmp_path / "imported"),
                "data.max_frames=64",
                "--max_steps",
                "2",
                "--batch_size",
                "2",
                "--learning_rate",
                "0.05",
                "task.lr_schedule.warmup_steps=1",
                f"run_dir={lora_run}",
                "logger=csv",
                "callbacks.progress=null",
                "trainer.accelerator=cpu",
                "num_workers=0",
                "trainer.enable_progress_bar=false",
            ]
        )
    except SystemExit as stop:
        assert not stop.code, capsys.readouterr().err
    adapter = lora_run / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    with_lora = tmp_path / "lora_song.wav"
    assert (
        sample_main(
            [
                "sample",
                "--bundle",
                str(tmp_path / "bundle"),
                "--adapter",
                str(adapter),
                "--style",
                str(tmp_path / "style.pt"),
                "--seconds",
                "2",
                "--output",
                str(with_lora),
            ]
        )
        == 0
    )
    assert load_file(str(with_lora.with_suffix(".latent.safetensors")))["latent"].shape == (64, 44)
    capsys.readouterr()
    assert (
        sample_main(
            [
                "sample",
                "--bundle",
                str(tmp_path / "bundle"),
                "--adapter",
                str(tmp_path / "no_adapter"),
                "--style",
                str(tmp_path / "style.pt"),
                "--seconds",
                "2",
                "--output",
                str(with_lora),
            ]
        )
        == 2
    )
    assert "not a PEFT adapter folder" in capsys.readouterr().err  # one line, not PEFT's traceback
