"""Callbacks every run uses: self-describing checkpoints, loss curves beside them, a quiet console."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ModelSummary, RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from refrain.bundles.export import CHECKPOINT_FORMAT_VERSION
from refrain.fileio import atomic_path

Series = list[tuple[int, float]]


class CheckpointMetadata(Callback):
    """Store the resolved config and the format version in every checkpoint, so it describes itself."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["refrain"] = {"config": self.config, "format_version": CHECKPOINT_FORMAT_VERSION}


def thin(series: Series, limit: int) -> Series:
    """Halve a series by averaging neighbours once it passes ``2 * limit`` points (memory and checkpoint
    size stay bounded on million-step runs; the curve's shape survives)."""
    if len(series) <= 2 * limit:
        return series
    pairs = zip(series[0::2], series[1::2], strict=False)
    thinned = [(b[0], (a[1] + b[1]) / 2) for a, b in pairs]
    return thinned + ([series[-1]] if len(series) % 2 else [])


def scale_axis(ax: Any, values: list[float]) -> None:
    """Log scale when every value is positive and they span more than a decade, else linear: a narrow
    range on a log axis has no major tick and so no labels at all."""
    low, high = min(values), max(values)
    if low > 0 and high / low > 10:
        ax.set_yscale("log")
    else:
        ax.set_yscale("linear")
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)


class LossCurvePlot(Callback):
    """Training losses and validation metrics over steps, as one PNG beside the checkpoints.

    Train series are every logged scalar named ``*loss*`` (not ``val*``), sampled at each batch end;
    validation series are every ``val/*`` scalar except the per-sigma-bin breakdown, sampled at each
    validation end. The history is part of the callback's checkpoint state, so a resumed run plots the
    whole run, not just the part since the resume. The PNG is rewritten at each checkpoint, validation and
    at the end, and in between once ``every_seconds`` have passed, so a person can look at a run without
    starting TensorBoard. Time, not steps: a write takes ~0.4 s (matplotlib), which every 50 steps cost
    the CPU demo 3 % of its training and a fast GPU run more; once a minute it stays under 1 % at any speed.
    """

    def __init__(
        self,
        path: str | Path,
        every_seconds: float = 60.0,
        max_points: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.every_seconds = every_seconds
        self.max_points = max_points
        self.clock = clock
        self.last_write = clock()
        self.history: dict[str, Series] = defaultdict(list)
        self.validation: dict[str, Series] = defaultdict(list)

    def _record(self, store: dict[str, Series], name: str, step: int, value: torch.Tensor) -> None:
        series = store[name]
        if series and series[-1][0] == step:
            series[-1] = (step, float(value))
        else:
            series.append((step, float(value)))
            store[name] = thin(series, self.max_points)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last_write = self.clock()  # the first write comes every_seconds into training, not into set-up

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        for name, value in trainer.callback_metrics.items():
            if "loss" in name and not name.startswith("val") and value.numel() == 1:
                self._record(self.history, name, step, value)
        due = self.every_seconds and self.clock() - self.last_write >= self.every_seconds
        if due and trainer.is_global_zero:
            self.write()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val/") and "_bin_" not in name and value.numel() == 1:
                self._record(self.validation, name, trainer.global_step, value)
        if trainer.is_global_zero and trainer.state.fn == TrainerFn.FITTING:
            self.write()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.is_global_zero:
            self.write()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write()

    def state_dict(self) -> dict[str, Any]:
        """Series as (n, 2) float64 tensors: compact, and loadable with ``weights_only``."""
        pack = lambda store: {k: torch.tensor(v, dtype=torch.float64) for k, v in store.items() if v}  # noqa: E731
        return {"train": pack(self.history), "validation": pack(self.validation)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key, store in (("train", self.history), ("validation", self.validation)):
            for name, table in (state_dict.get(key) or {}).items():
                store[name] = [(int(step), float(value)) for step, value in table.tolist()]

    def write(self) -> Path | None:
        self.last_write = self.clock()
        panels = [
            (title, store)
            for title, store in (("train", self.history), ("validation", self.validation))
            if any(store.values())
        ]
        if not panels:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.6 * len(panels)), squeeze=False)
        for ax, (title, store) in zip(axes[:, 0], panels, strict=True):
            values: list[float] = []
            for name, series in sorted(store.items()):
                if series:
                    steps, ys = zip(*series, strict=True)
                    marker = "o" if len(series) < 30 else None  # a few validation points stay visible
                    ax.plot(steps, ys, label=name, linewidth=1, marker=marker, markersize=3)
                    values += [y for y in ys if y == y and abs(y) != float("inf")]
            if values:
                scale_axis(ax, values)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(self.path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return self.path


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint with one ``last.ckpt`` per run folder, always the newest state.

    - No version counter: a run folder holds one run (refrain.training.run_folder), so an existing
      ``last.ckpt`` is this run's own and is replaced, never kept beside a ``last-v1.ckpt`` (which a
      resume with another checkpoint cadence, or after a preemption, used to leave stale).
    - After a preemption signal, GracefulStop has saved the exact mid-epoch state as ``last.ckpt``; the
      epoch-end "last" save that follows the stop would overwrite it with a state past the epoch's end
      (a resume from it would not continue the interrupted run exactly), so it is skipped.
    """

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        from refrain.training.signals import GracefulStop

        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, GracefulStop) and callback.saved_path is not None:
                self.last_model_path = str(callback.saved_path)
                return
        super()._save_last_checkpoint(trainer, monitor_candidates)


class StepProgressBar(RichProgressBar):
    """Rich's bar without "Epoch 0/-2": a run bounded by steps shows its epoch alone (Lightning prints
    ``max_epochs - 1`` even when max_epochs is -1, i.e. unbounded)."""

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.max_epochs
        text = f"Epoch {current_epoch}" + (f"/{epochs - 1}" if epochs is not None and epochs > 0 else "")
        return f"{text:{len(self.validation_description)}}"

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger version is a folder name, not a metric
        return items


class ParameterSummary(ModelSummary):
    """Lightning's model summary without its FLOPs column: it needs an example input the tasks do not
    have, so it printed "0" for every module and "Total FLOPs: 0" for the model."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = {name: values for name, values in summary_data if name in ("Name", "Type", "Params")}
        rows = list(zip(*columns.values(), strict=True))
        lines = [f"  {name:<24} {kind:<28} {params:>9}" for name, kind, params in rows]
        frozen = total_parameters - trainable_parameters
        lines.append(
            f"  parameters: {trainable_parameters:,} trainable, {frozen:,} frozen ({model_size:.1f} MB)"
        )
        rank_zero_info("model:\n" + "\n".join(lines))
