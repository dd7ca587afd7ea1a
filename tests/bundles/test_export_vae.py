"""refrain-export for the VAE: EMA weights in diffusers' format, the resolved config, clear errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from diffusers import AutoencoderOobleck
from torch.utils.data import DataLoader

from refrain.bundles.export import export_vae
from refrain.bundles.vae import load_vae_bundle
from refrain.cli.export import main
from refrain.data.audio_dataset import collate_crops
from refrain.errors import RefrainInputError
from refrain.losses.spectral import StereoMRSTFTLoss
from refrain.models.vae.discriminator import MultiScaleSTFTDiscriminator
from refrain.models.vae.oobleck import build_oobleck_vae
from refrain.tasks.vae_task import VAETask
from refrain.training.callbacks import CheckpointMetadata
from refrain.training.ema import EMA

TINY = {
    "downsampling_ratios": [2, 4, 8],
    "channel_multiples": [1, 2, 4],
    "encoder_hidden_size": 8,
    "decoder_channels": 8,
}
CONFIG = {"exp_name": "export_test", "model": {"vae": {"chunk_seconds": 1.0, "overlap_seconds": 0.2}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[VAETask, Path]:
    """Three real training steps of a tiny VAE, saved the way refrain-train saves (with refrain metadata)."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    task = VAETask(
        build_oobleck_vae(**TINY, latent_channels=4),
        MultiScaleSTFTDiscriminator(n_ffts=(256, 128), filters=4),
        functools.partial(torch.optim.AdamW, lr=1e-3),
        functools.partial(torch.optim.AdamW, lr=1e-3),
        spectral_loss=StereoMRSTFTLoss(44100, fft_sizes=(256, 64)),
        ema=functools.partial(EMA, decay=0.9),
    )
    audio = 0.1 * torch.randn(2, 2048, generator=torch.Generator().manual_seed(0))
    items = [{"audio": audio, "degraded": audio, "mask": torch.ones(1, 2048), "setting": "clean"}] * 2
    trainer = pl.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[CheckpointMetadata(CONFIG)],
        accelerator="cpu",
    )
    trainer.fit(task, DataLoader(items, batch_size=2, collate_fn=collate_crops))
    path = root / "last.ckpt"
    trainer.save_checkpoint(path)
    return task, path


def test_exported_bundle_opens_with_diffusers_and_holds_the_ema(trained, tmp_path: Path) -> None:
    task, checkpoint = trained
    out = export_vae(checkpoint, tmp_path / "bundle")
    opened = AutoencoderOobleck.from_pretrained(out / "vae")
    ema = task.ema_vae()
    audio = 0.1 * torch.randn(1, 2, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ema.decode(ema.encode(audio).mean)
        assert torch.equal(opened.decode(opened.encode(audio).latent_dist.mean).sample, expected)
        live = task.model.decode(task.model.encode(audio).mean)
    assert not torch.equal(live, expected)  # the bundle holds the EMA, not the live weights
    bundle = load_vae_bundle(out)
    assert bundle.config == CONFIG and bundle.manifest["weights"] == "ema"
    assert bundle.manifest["global_step"] == 3 and bundle.manifest["ema_updates"] == 3


def test_cli_exports_and_reports_errors_in_one_line(trained, tmp_path: Path, capsys) -> None:
    _, checkpoint = trained
    assert main(["--kind", "vae", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["kind"] == "vae"
    assert main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "b")]) == 2
    assert "already exists. Fix:" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "none.ckpt"), "--output", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()


def test_foreign_and_newer_checkpoints_are_refused(trained, tmp_path: Path) -> None:
    _, checkpoint = trained
    data = torch.load(checkpoint, weights_only=True)
    newer = {**data, "refrain": {**data["refrain"], "format_version": 99}}
    torch.save(newer, tmp_path / "newer.ckpt")
    with pytest.raises(RefrainInputError, match="newer than this refrain understands"):
        export_vae(tmp_path / "newer.ckpt", tmp_path / "x")
    torch.save({k: v for k, v in data.items() if k != "refrain_vae"}, tmp_path / "dit.ckpt")
    with pytest.raises(RefrainInputError, match="not a VAE training checkpoint"):
        export_vae(tmp_path / "dit.ckpt", tmp_path / "x")
    torch.save({k: v for k, v in data.items() if k != "refrain"}, tmp_path / "bare.ckpt")
    with pytest.raises(RefrainInputError, match="no refrain metadata"):
        export_vae(tmp_path / "bare.ckpt", tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_demo_recipe_trains_end_to_end_and_exports(tmp_path: Path) -> None:
    """experiment=demo_vae through refrain.training.run.train on a two-song prepared dataset, then refrain-export."""
    import datasets
    import numpy as np
    import soundfile as sf

    from refrain.config import compose_config
    from refrain.data.schema import FEATURES, empty_recaption
    from refrain.training.run import train

    records = []
    for index, split in enumerate(("train", "train", "validation")):
        path = tmp_path / f"song{index}.wav"
        t = np.arange(48000 * 2) / 48000
        wave = 0.3 * np.sin(2 * np.pi * (220 + 110 * index) * t)
        sf.write(path, np.stack([wave, wave * 0.8], axis=1).astype(np.float32), 48000)
        records.append(
            {
                "keys": path.stem,
                "filename": str(path),
                "tags": [],
                "speaker_emb_path": "",
                "norm_lyrics": "",
                "recaption": empty_recaption(),
                "lrc": [],
                "lrc_source": "none",
                "phoneme_ids": [],
                "duration": 2.0,
                "sample_rate": 48000,
                "channels": 2,
                "language": "en",
                "content_hash": str(index),
                "split": split,
            }
        )
    splits = {
        s: datasets.Dataset.from_list([r for r in records if r["split"] == s], features=FEATURES)
        for s in ("train", "validation")
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "ds" / "hf"))
    cfg = compose_config(
        [
            "experiment=demo_vae",
            "model/vae=tiny",
            f"dataset_path={tmp_path / 'ds'}",
            f"run_dir={tmp_path / 'run'}",
            "num_workers=0",
            "logger=csv",
            "callbacks.progress=null",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "trainer.enable_model_summary=false",
            "every_plot_step=2",
            "task.objective.adversarial_start_step=2",
            "data.batch_size=1",
        ]
    )
    result = train(cfg)
    assert result.trainer.global_step == 4
    assert {"val/mp3/hf_energy_db", "val/clean/si_sdr", "train/loss_adv"} <= set(result.metrics)
    assert (tmp_path / "run" / "plots" / "step_000004" / "spectrograms.png").is_file()
    bundle = load_vae_bundle(export_vae(result.last_checkpoint, tmp_path / "bundle"))
    assert bundle.config["exp_name"] == "demo_vae" and bundle.manifest["hop_length"] == 1024
    assert bundle.manifest["latent_channels"] == 16 and bundle.model.frame_rate == pytest.approx(44100 / 1024)
