"""A VAETask's training steps timed in a real Lightning Trainer on one in-memory batch (shared by the VAE benches).

Only the model's compute is timed: the batch is a fixed crop of noise, no data pipeline runs.
"""

from __future__ import annotations

import tempfile
import time

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from refrain.data.audio_dataset import collate_crops
from refrain.tasks.vae_task import VAETask


class StepClock(Callback):
    """Wall-clock time at the end of every training batch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.times.append(time.perf_counter())


def step_end_times(task: VAETask, batch: int, crop: int, steps: int) -> tuple[float, list[float]]:
    """Fit ``task`` for ``steps`` steps of ``batch`` stereo crops; (start time, each step's end time)."""
    audio = 0.1 * torch.randn(2, crop, generator=torch.Generator().manual_seed(0))
    item = {"audio": audio, "degraded": audio, "mask": torch.ones(1, crop), "setting": "clean"}
    loader = DataLoader([item] * (batch * steps), batch_size=batch, collate_fn=collate_crops)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            max_steps=steps,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock],
            default_root_dir=tmp,
        )
        start = time.perf_counter()
        trainer.fit(task, loader)
    return start, clock.times
