"""Faults during a run: non-finite updates are skipped and counted, failed samples are reported per epoch.

Both tasks already skip a non-finite update themselves and keep a ``nonfinite_skips`` counter; the guard
reads that counter and is the one place that decides when enough is enough. For a LightningModule
without a counter (automatic optimisation), the guard does the skipping itself: a non-finite loss or
gradient on any rank drops the whole update by clearing the gradients before the optimizer steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


def gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient ``optimizer`` would apply is finite (one fused norm, one host sync)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


class NonFiniteTrainingError(RuntimeError):
    """Too many non-finite updates in a row; the message names the step and the last good checkpoint."""


def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint the run wrote (``last.ckpt`` when kept), or None before the first one.

    Only a file that exists counts: after a resume the callback's restored state names the paths of the
    run it came from, which need not exist here."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, ModelCheckpoint):
            for path in (callback.last_model_path, callback.best_model_path):
                if path and Path(path).is_file():
                    return str(path)
    return None


class NonFiniteGuard(Callback):
    """Count non-finite updates, log them, and stop after ``max_consecutive`` in a row.

    Stopping raises ``NonFiniteTrainingError`` from the batch end, before any checkpoint of that step is
    written, so the run keeps its last good checkpoint (skipped updates never touched the weights).
    """

    def __init__(self, max_consecutive: int = 100) -> None:
        if max_consecutive < 1:
            raise ValueError("max_consecutive must be at least 1")
        self.max_consecutive = int(max_consecutive)
        self.skips = 0
        self.consecutive = 0
        self._owns = False
        self._seen = 0
        self._last_step = 0
        self._bad_loss = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._owns = not hasattr(pl_module, "nonfinite_skips")
        if self._owns and not pl_module.automatic_optimization:
            rank_zero_warn(
                f"{type(pl_module).__name__} optimises manually and keeps no `nonfinite_skips` counter: "
                "non-finite updates are not guarded"
            )
        self._seen = self._count(pl_module)
        self._last_step = trainer.global_step

    def _count(self, pl_module: pl.LightningModule) -> int:
        return self.skips if self._owns else int(getattr(pl_module, "nonfinite_skips", 0))

    # ----- skipping, for modules that do not skip themselves -----
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if self._owns and not bool(torch.isfinite(loss.detach()).all()):
            self._bad_loss = True

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._owns:
            return
        local = self._bad_loss or not gradients_finite(optimizer)
        self._bad_loss = False
        if trainer.strategy.reduce_boolean_decision(local, all=False):
            optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are left untouched
            self.skips += 1
            rank_zero_warn(f"non-finite loss or gradient at step {trainer.global_step}: update skipped")

    # ----- counting and stopping -----
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        total = self._count(pl_module)
        if total > self._seen:
            self.consecutive += total - self._seen
        elif trainer.global_step != self._last_step:
            self.consecutive = 0  # a real update happened
        self._seen, self._last_step = total, trainer.global_step
        if self._owns:
            pl_module.log("train/nonfinite_skips", float(total))
        pl_module.log("train/nonfinite_consecutive", float(self.consecutive))
        if self.consecutive >= self.max_consecutive:
            kept = last_checkpoint(trainer)
            where = f"the last good checkpoint is {kept}" if kept else "no checkpoint was written yet"
            raise NonFiniteTrainingError(
                f"step {trainer.global_step}: {self.consecutive} consecutive non-finite updates (loss or "
                f"gradient), {total} in this run; stopped, {where}. Fix: lower learning_rate, lengthen "
                "the warm-up or lower gradient_clip_val, then resume from that checkpoint"
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._owns and self.skips:
            rank_zero_info(f"{self.skips} non-finite updates were skipped in this run")

    def state_dict(self) -> dict[str, Any]:
        return {"skips": self.skips}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skips = int(state_dict.get("skips", 0))


class SkippedItemsReport(Callback):
    """Train items that failed to load (file gone, corrupt cache entry): logged and printed per epoch.

    Counts come from the datamodule's ``skipped_items(stage, reset=True)`` (the DiT data: a counter its
    workers share) or else from the ``skipped`` entry the collate puts in each batch. A task that reports
    its own count (it has ``skipped_items_epoch``, as the VAE task does) is left to do so.
    """

    def __init__(self) -> None:
        self.epoch_count = 0
        self.total = 0

    def _task_reports(self, pl_module: pl.LightningModule) -> bool:
        return hasattr(pl_module, "skipped_items_epoch")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_count = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if isinstance(batch, Mapping) and "skipped" in batch:
            self.epoch_count += int(batch["skipped"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._task_reports(pl_module):
            return
        datamodule = getattr(trainer, "datamodule", None)
        count = self.epoch_count
        if datamodule is not None and callable(getattr(datamodule, "skipped_items", None)):
            count = int(datamodule.skipped_items("train", reset=True))
        summed = trainer.strategy.reduce(torch.tensor(float(count), device=pl_module.device), reduce_op="sum")
        epoch_total = int(round(float(summed)))
        self.total += epoch_total
        pl_module.log("data/skipped_items_epoch", float(count), reduce_fx="sum", sync_dist=True)
        message = (
            f"epoch {trainer.current_epoch}: {epoch_total} training items failed to load and were skipped "
            f"({self.total} in this run)"
        )
        if epoch_total:  # a clean epoch stays quiet; the metric above still records its zero
            rank_zero_warn(message + "; the warnings above name the files")

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total = int(state_dict.get("total", 0))
