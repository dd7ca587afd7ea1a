"""Callbacks every run uses: self-describing checkpoints and loss-curve plots beside them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from refrain.fileio import atomic_path
from refrain.training.checkpoint_io import FORMAT_VERSION


class CheckpointMetadata(Callback):
    """Store the resolved config and the format version in every checkpoint, so it describes itself."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["refrain"] = {"config": self.config, "format_version": FORMAT_VERSION}


class LossCurvePlot(Callback):
    """Collect every logged train scalar whose name contains 'loss' and plot the curves to a PNG.

    The PNG is rewritten at each checkpoint and at the end of training so a person can look at a run
    without starting TensorBoard.
    """

    def __init__(self, path: str | Path, every_n_steps: int = 50) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        for name, value in trainer.callback_metrics.items():
            if "loss" in name and not name.startswith("val") and value.numel() == 1:
                series = self.history[name]
                if not series or series[-1][0] != step:
                    series.append((step, float(value)))
        if self.every_n_steps and step and step % self.every_n_steps == 0:
            self.write()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.is_global_zero:
            self.write()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write()

    def write(self) -> Path | None:
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, series in sorted(self.history.items()):
            steps, values = zip(*series, strict=True)
            ax.plot(steps, values, label=name, linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(self.path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return self.path
