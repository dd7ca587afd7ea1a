"""VAE task: the loss falls on a fixed batch, GAN steps count once, checkpoints restore exactly, NaN skips."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from refrain.data.audio_dataset import collate_crops
from refrain.losses.spectral import StereoMRSTFTLoss
from refrain.models.vae.discriminator import MultiScaleSTFTDiscriminator
from refrain.models.vae.oobleck import build_oobleck_vae
from refrain.tasks.vae_task import VAEObjective, VAETask
from refrain.training.ema import EMA
from refrain.training.vae_listening import VAEPlotter

RATE = 44100
TINY = {
    "sample_rate": RATE,
    "downsampling_ratios": [2, 4, 8],
    "channel_multiples": [1, 2, 4],
    "encoder_hidden_size": 8,
    "decoder_channels": 8,
    "latent_channels": 4,
}


def make_task(run_dir: Path, seed: int = 0, every_plot_step: int | None = None, **objective) -> VAETask:
    torch.manual_seed(seed)
    discriminator = MultiScaleSTFTDiscriminator(n_ffts=(512, 256, 128), filters=4)
    return VAETask(
        build_oobleck_vae(**TINY),
        discriminator,
        generator_optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, betas=(0.8, 0.99)),
        discriminator_optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, betas=(0.8, 0.99)),
        spectral_loss=StereoMRSTFTLoss(RATE, fft_sizes=(1024, 256, 64)),
        objective=VAEObjective(**{"adversarial_start_step": 10_000, **objective}),
        ema=functools.partial(EMA, decay=0.99),
        plotter=VAEPlotter(run_dir, every_plot_step),
        gradient_clip_val=1.0,
    )


def fixed_items(count: int = 2, frames: int = 2048) -> list[dict]:
    """Stereo tone+noise crops; the 'degraded' input is the same audio with its top octave removed."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(frames) / RATE
    items = []
    for index in range(count):
        tone = 0.3 * torch.sin(2 * torch.pi * (220 + 110 * index) * t)
        audio = torch.stack([tone, 0.5 * tone]) + 0.02 * torch.randn(2, frames, generator=generator)
        spectrum = torch.fft.rfft(audio)
        spectrum[..., torch.fft.rfftfreq(frames, 1 / RATE) > 11000] = 0
        degraded = torch.fft.irfft(spectrum, n=frames)
        items.append(
            {"audio": audio, "degraded": degraded, "mask": torch.ones(1, frames), "setting": "lowpass"}
        )
    return items


def loader(items: list) -> DataLoader:
    return DataLoader(items, batch_size=2, collate_fn=collate_crops)


def trainer(tmp_path: Path, max_steps: int, **kwargs) -> pl.Trainer:
    options = {
        "max_steps": max_steps,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "accelerator": "cpu",
        "default_root_dir": tmp_path,
        **kwargs,
    }
    return pl.Trainer(**options)


@torch.no_grad()
def reconstruction_loss(task: VAETask, batch: dict) -> float:
    task.model.eval()
    recon = task.model(batch["degraded"], sample_posterior=False).reconstruction
    return float(task.spectral_loss(recon, batch["audio"])["stft"])


def test_loss_falls_on_a_fixed_batch(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    batch = collate_crops(fixed_items())
    before = reconstruction_loss(task, batch)
    # 48 steps: the posterior mean's loss is bumpy early on (6.9 -> 3.6 / 3.4 / 2.4 / 2.8 after 24 / 32 / 40 /
    # 48 steps on auraloss's loss, 5.1 / 5.2 / 2.7 / 2.6 on refrain's equal one, rounding apart)
    trainer(tmp_path, max_steps=48).fit(task, loader(fixed_items()))
    after = reconstruction_loss(task, batch)
    print(f"MR-STFT loss on the fixed batch: {before:.3f} -> {after:.3f} after 48 steps")
    assert after < 0.7 * before
    assert task.nonfinite_skips == 0 and int(task.ema.num_updates) == 48


def test_gan_phase_plots_checkpoint_restore_and_resume(tmp_path: Path) -> None:
    task = make_task(tmp_path / "run", adversarial_start_step=2, every_plot_step=3)
    logger = TensorBoardLogger(tmp_path / "tb", name="vae")
    fit = trainer(tmp_path, max_steps=6, logger=logger, log_every_n_steps=1)
    fit.fit(task, loader(fixed_items()))
    # one global step per generator update; the discriminator stepped from step 2 on, uncounted
    assert fit.global_step == 6 and int(task.ema.num_updates) == 6
    disc_state = fit.optimizers[1].state
    assert int(next(iter(disc_state.values()))["step"]) == 4
    assert {"train/loss_adv", "train/loss_feature_matching", "train/loss_disc", "train/loss_kl"} <= set(
        fit.callback_metrics
    )
    for step in (3, 6):
        folder = tmp_path / "run" / "plots" / f"step_{step:06d}"
        assert sorted(p.name for p in folder.iterdir()) == [
            "degraded.wav",
            "input.wav",
            "reconstruction.wav",
            "spectrograms.png",
        ]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(logger.log_dir)), size_guidance={"images": 0, "audio": 0}).Reload()
    assert "spectrograms" in events.Tags()["images"] and "audio/reconstruction" in events.Tags()["audio"]

    path = tmp_path / "last.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["refrain_vae"]["autoencoder_config"]["downsampling_ratios"] == [2, 4, 8]
    fresh = make_task(tmp_path / "run", seed=123, adversarial_start_step=2)
    fresh.load_state_dict(checkpoint["state_dict"])
    audio = fixed_items(1)[0]["degraded"].unsqueeze(0)
    with torch.no_grad():
        for a, b in ((task.model.eval(), fresh.model.eval()), (task.ema_vae(), fresh.ema_vae())):
            torch.testing.assert_close(
                a(audio, sample_posterior=False).reconstruction,
                b(audio, sample_posterior=False).reconstruction,
                rtol=0,
                atol=0,
            )

    resumed = make_task(tmp_path / "run", seed=7, adversarial_start_step=2)
    again = trainer(tmp_path, max_steps=8)
    again.fit(resumed, loader(fixed_items()), ckpt_path=path)
    assert again.global_step == 8 and int(resumed.ema.num_updates) == 8


def test_nonfinite_loss_skips_the_update_and_counts_it(tmp_path: Path) -> None:
    task = make_task(tmp_path, freeze_encoder=True)
    encoder_before = [p.clone() for p in task.model.autoencoder.encoder.parameters()]
    decoder_before = [p.clone() for p in task.model.autoencoder.decoder.parameters()]
    poisoned = fixed_items()
    poisoned[0] = {**poisoned[0], "degraded": torch.full_like(poisoned[0]["degraded"], float("nan"))}
    fit = trainer(tmp_path, max_steps=-1, max_epochs=1)
    with pytest.warns(UserWarning, match="non-finite generator loss"):
        fit.fit(task, DataLoader(poisoned + fixed_items(), batch_size=2, collate_fn=collate_crops))
    assert task.nonfinite_skips == 1 and fit.global_step == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(encoder_before, task.model.autoencoder.encoder.parameters(), strict=True)
    )
    assert not all(
        torch.equal(a, b)
        for a, b in zip(decoder_before, task.model.autoencoder.decoder.parameters(), strict=True)
    )
    assert all(torch.isfinite(p).all() for p in task.model.parameters())


def test_validation_logs_clean_and_mp3_metrics_by_name(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    metrics = trainer(tmp_path, max_steps=1).validate(task, loader(fixed_items()), verbose=False)[0]
    names = {
        f"val/{source}/{m}"
        for source in ("clean", "mp3")
        for m in ("mrstft", "mel", "si_sdr", "hf_energy_db")
    }
    assert names <= set(metrics)
    assert all(torch.isfinite(torch.tensor(metrics[name])) for name in names)


def test_crop_not_a_multiple_of_the_hop_is_a_config_error(tmp_path: Path) -> None:
    from refrain.errors import RefrainInputError

    task = make_task(tmp_path)
    with pytest.raises(RefrainInputError, match="data.crop_samples"):
        trainer(tmp_path, max_steps=1).fit(task, loader(fixed_items(frames=2000)))


def test_skipped_items_are_counted_over_every_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DDP each rank loads its own items; the epoch's count is their sum, on every rank."""
    from types import SimpleNamespace

    task = make_task(tmp_path)
    other_rank = 3.0
    strategy = SimpleNamespace(
        reduce=lambda tensor, reduce_op: tensor + other_rank if reduce_op == "sum" else None
    )
    task._trainer = SimpleNamespace(world_size=2, strategy=strategy)  # type: ignore[assignment]
    logged: dict[str, float] = {}
    monkeypatch.setattr(task, "log", lambda name, value, **kwargs: logged.update({name: value}))
    warnings: list[str] = []
    monkeypatch.setattr("refrain.tasks.vae_task.rank_zero_warn", warnings.append)
    monkeypatch.setattr(VAETask, "current_epoch", property(lambda self: 4))
    task.on_train_epoch_start()
    task.skipped_items_epoch = 2
    task.on_train_epoch_end()
    assert logged == {"data/skipped_items_epoch": 5.0} and task.skipped_items_total == 5
    assert warnings and warnings[0].startswith("epoch 4: 5 audio items failed to load")
