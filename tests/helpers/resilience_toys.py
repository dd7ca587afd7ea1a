"""Tiny task, data and fault-injecting callbacks for the resume / signal / distributed tests.

Also a command-line driver, so tests can run (and kill) a real training run in a subprocess:
``python tests/helpers/resilience_toys.py [hydra overrides] [task.KEY=VALUE] [data.KEY=VALUE]``.
"""

from __future__ import annotations

import io
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import Dataset

from refrain.data.resumable_sampler import ResumableDataLoader, ResumableSampler, split_key

WEIGHTS = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


class KeyedNoiseDataset(Dataset):
    """Regression items whose input noise is drawn from (seed, epoch, index), never from worker RNG."""

    def __init__(self, size: int = 24, seed: int = 0, noise: float = 0.1) -> None:
        generator = torch.Generator().manual_seed(1234)
        self.inputs = torch.randn(size, 4, generator=generator)
        self.seed = seed
        self.noise = noise

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = split_key(key, len(self))
        rng = np.random.default_rng([self.seed, epoch, index])
        inputs = self.inputs[index] + torch.from_numpy(rng.normal(0, self.noise, 4).astype(np.float32))
        return inputs, inputs @ WEIGHTS


class ResumableToyData(pl.LightningDataModule):
    def __init__(
        self, size: int = 24, batch_size: int = 4, num_workers: int = 0, seed: int = 0, noise: float = 0.1
    ) -> None:
        super().__init__()
        self.dataset = KeyedNoiseDataset(size, seed, noise)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def train_dataloader(self) -> ResumableDataLoader:
        sampler = ResumableSampler(self.dataset, shuffle=True, seed=self.seed, epoch_keys=True)
        return ResumableDataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class NoisyToyTask(pl.LightningModule):
    """Dropout, torch/numpy/python noise in the loss, AdamW, a scheduler and an EMA: all must resume."""

    def __init__(
        self,
        learning_rate: float = 0.01,
        dropout: float = 0.2,
        noisy: bool = True,
        nan_from_step: int | None = None,
    ) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(16, 1)
        )
        self.ema = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        self.ema.load_state_dict({k.replace("3.", "2."): v for k, v in self.net.state_dict().items()})
        self.ema.requires_grad_(False)
        self.learning_rate = learning_rate
        self.noisy = noisy
        self.nan_from_step = nan_from_step

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = (batch["inputs"], batch["targets"]) if isinstance(batch, dict) else batch
        loss = torch.nn.functional.mse_loss(self.net(inputs), targets)
        if self.noisy:
            jitter = torch.randn(()) + float(np.random.normal()) + random.random()
            loss = loss + 1e-3 * jitter
        if self.nan_from_step is not None and self.global_step >= self.nan_from_step:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        """EMA right after the update (as the real tasks do), so a checkpoint at this step holds it."""
        optimizer.step(closure=optimizer_closure)
        with torch.no_grad():
            for ema, net in zip([self.ema[0], self.ema[2]], [self.net[0], self.net[3]], strict=True):
                for e, p in zip(ema.parameters(), net.parameters(), strict=True):
                    e.lerp_(p, 0.1)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.learning_rate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + 0.1 * step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class LossRecorder(pl.Callback):
    """Append ``step,loss.hex()`` per batch, opening and closing the file each time (survives SIGKILL)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # manual optimisation (the VAE): the value the task logged this step
            loss = trainer.callback_metrics.get("train/loss")
        if loss is None or trainer.global_rank != 0:
            return
        with open(self.path, "a") as handle:
            handle.write(f"{trainer.global_step},{float(loss).hex()}\n")


def read_losses(path: Path) -> dict[int, str]:
    rows = [line.split(",") for line in Path(path).read_text().splitlines() if line]
    return {int(step): value for step, value in rows}


class KillAt(pl.Callback):
    """At ``step`` (batch end, before that step's checkpoint) on ``rank``: send ``sig`` or ``os._exit``."""

    def __init__(
        self,
        step: int,
        sig: str = "SIGKILL",
        rank: int = 0,
        exit_code: int | None = None,
        stamp: str | None = None,
    ) -> None:
        self.step, self.sig, self.rank, self.exit_code, self.stamp = step, sig, rank, exit_code, stamp

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step != self.step or trainer.global_rank != self.rank:
            return
        if self.stamp:
            Path(self.stamp).write_text(repr(time.time()))
        if self.exit_code is not None:
            os._exit(self.exit_code)
        os.kill(os.getpid(), getattr(signal, self.sig))


class PidFile(pl.Callback):
    """Write ``folder/rank<R>`` holding this process's pid, so a test can watch every rank."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}").write_text(str(os.getpid()))


class KillDuringSave(pl.Callback):
    """From ``step`` on, ``torch.save`` writes half of the checkpoint and then SIGKILLs the process."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step != self.step:
            return
        real_save = torch.save

        def half_then_die(obj: Any, target: Any, *args: Any, **kwargs: Any) -> None:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            with open(target, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die


DIT = {"channels": 4, "frames": 16, "text": 8, "vocab": 20}


def tiny_dit_model(seed: int = 0) -> torch.nn.Module:
    from refrain.models.dit.config import DiTConfig
    from refrain.models.dit.transformer import DiffusionTransformer

    torch.manual_seed(seed)
    return DiffusionTransformer(
        DiTConfig(
            latent_channels=DIT["channels"],
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            text_dim=DIT["text"],
            lyric_vocab_size=DIT["vocab"],
            lyric_dim=16,
            lyric_conv_layers=1,
            repa_layer=1,
        )
    )


def dit_batch(seed: int, size: int = 2, nan: bool = False) -> dict[str, Any]:
    """One collated batch of the DiT batch contract (no teachers); the second item is padded."""
    g = torch.Generator().manual_seed(seed)
    c, t, text, vocab = DIT["channels"], DIT["frames"], DIT["text"], DIT["vocab"]
    frame_mask = torch.arange(t)[None] < torch.tensor([t, t - 4] * (size // 2) + [t] * (size % 2))[:, None]
    mean = torch.randn(size, c, t, generator=g) * frame_mask[:, None]
    if nan:
        mean[0, 0, 0] = float("nan")
    return {
        "latent_mean": mean,
        "latent_std": torch.full((size, c, t), 0.05),
        "frame_mask": frame_mask,
        "lyrics": torch.randint(1, vocab, (size, t), generator=g) * frame_mask,
        "style": torch.randn(size, 3, text, generator=g),
        "style_mask": torch.ones(size, 3, dtype=torch.bool),
        "teacher_features": {},
        "teacher_masks": {},
    }


class PrebuiltBatches(Dataset):
    """Already collated batches, yielded in order (a DataLoader with batch_size=None)."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.batches[index]


class DiTBatches(pl.LightningDataModule):
    """``count`` prebuilt DiT batches; the ones at ``nan_from`` and after carry a NaN latent."""

    def __init__(self, count: int = 8, nan_from: int | None = None, size: int = 2) -> None:
        super().__init__()
        nan = [nan_from is not None and i >= nan_from for i in range(count)]
        self.data = PrebuiltBatches([dit_batch(i, size, bad) for i, bad in enumerate(nan)])

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.data, batch_size=None, shuffle=False)


class KeyedAudio(Dataset):
    """Stereo tone + noise crops whose noise comes from (seed, epoch, index); 'degraded' is a lowpass copy."""

    def __init__(self, size: int = 8, frames: int = 4096, seed: int = 0, rate: int = 44100) -> None:
        self.size, self.frames, self.seed, self.rate = size, frames, seed, rate

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int) -> dict[str, Any]:
        epoch, index = split_key(key, self.size)
        rng = np.random.default_rng([self.seed, epoch, index])
        t = np.arange(self.frames) / self.rate
        tone = 0.3 * np.sin(2 * np.pi * (110 + 55 * index) * t + rng.uniform(0, 2 * np.pi))
        audio = np.stack([tone, 0.6 * tone]) + 0.02 * rng.standard_normal((2, self.frames))
        smooth = (
            np.convolve(audio[0], np.ones(4) / 4, mode="same"),
            np.convolve(audio[1], np.ones(4) / 4, mode="same"),
        )
        return {
            "audio": torch.from_numpy(audio.astype(np.float32)),
            "degraded": torch.from_numpy(np.stack(smooth).astype(np.float32)),
            "mask": torch.ones(1, self.frames),
            "setting": "lowpass",
        }


class KeyedAudioData(pl.LightningDataModule):
    def __init__(self, size: int = 8, batch_size: int = 2, frames: int = 4096, seed: int = 0) -> None:
        super().__init__()
        self.dataset = KeyedAudio(size, frames, seed)
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> ResumableDataLoader:
        from refrain.data.audio_dataset import collate_crops

        sampler = ResumableSampler(self.dataset, seed=self.seed, epoch_keys=True)
        return ResumableDataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_crops
        )


# The tiny VAE recipe, shrunk further: the real VAETask (GAN after step 3, posterior sampling, EMA, LR
# warm-up on both optimizers) on 4096-sample stereo crops.
VAE_OVERRIDES = [
    "model/vae=tiny",
    "task=vae",
    "learning_rate=1e-3",
    "every_plot_step=null",
    "trainer.gradient_clip_val=null",
    "model.vae.downsampling_ratios=[2,4,8]",
    "model.vae.channel_multiples=[1,2,4]",
    "model.vae.hop_length=64",
    "model.vae.latent_channels=4",
    "model.vae.encoder_hidden_size=8",
    "model.vae.decoder_channels=8",
    "task.objective.adversarial_start_step=3",
    "task.discriminator.filters=4",
    "task.discriminator.n_ffts=[512,256,128]",
    "task.spectral_loss.fft_sizes=[512,256,128,64]",
    "task.spectral_loss.perceptual_weighting=false",
    "task.generator_scheduler.total_iters=5",
    "task.discriminator_scheduler.total_iters=5",
]


def vae_config(run_dir: Path | str, *overrides: str) -> DictConfig:
    """The toy config with the real VAE task and keyed synthetic audio; ``data.*`` keys applied after."""
    from refrain.config import compose_config

    late = [o for o in overrides if o.startswith("data.")]
    cfg = compose_config(
        [
            f"run_dir={run_dir}",
            "logger=none",
            "callbacks.progress=null",
            "callbacks.loss_curves=null",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "trainer.accelerator=cpu",
            "trainer.log_every_n_steps=1",
            *VAE_OVERRIDES,
            *[o for o in overrides if o not in late],
        ]
    )
    with open_dict(cfg):
        cfg.data = {"_target_": "helpers.resilience_toys.KeyedAudioData", "seed": "${seed}"}
        apply_late(cfg, late)
    return cfg


def apply_late(cfg: DictConfig, overrides: list[str]) -> None:
    """``key=value`` overrides for nodes set after composition (the toy task and data)."""
    for item in overrides:
        key, value = item.split("=", 1)
        OmegaConf.update(cfg, key, OmegaConf.create(f"v: {value}").v, force_add=True)


TOY_TASK = {"_target_": "helpers.resilience_toys.NoisyToyTask", "learning_rate": "${learning_rate}"}
TOY_DATA = {"_target_": "helpers.resilience_toys.ResumableToyData", "seed": "${seed}"}


def toy_config(run_dir: Path | str, *overrides: str) -> DictConfig:
    """conf/train.yaml with the toy task/data, quiet, CPU; ``task.*``/``data.*`` keys applied after."""
    from refrain.config import compose_config

    late = [o for o in overrides if o.startswith(("task.", "data."))]
    early = [o for o in overrides if o not in late]
    cfg = compose_config(
        [
            f"run_dir={run_dir}",
            "logger=none",
            "callbacks.progress=null",
            "callbacks.loss_curves=null",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "trainer.accelerator=cpu",
            "trainer.log_every_n_steps=1",
            "learning_rate=0.01",
            *early,
        ]
    )
    with open_dict(cfg):
        cfg.task = dict(TOY_TASK)
        cfg.data = dict(TOY_DATA)
        apply_late(cfg, late)
    return cfg


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, so helpers.* targets import
    from refrain.training.run import train

    run_dir = next(a.split("=", 1)[1] for a in argv if a.startswith("run_dir="))
    rest = [a for a in argv if not a.startswith("run_dir=")]
    result = train(toy_config(run_dir, *rest))
    if result.trainer is not None and result.trainer.is_global_zero:
        print(f"finished at step {result.trainer.global_step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
