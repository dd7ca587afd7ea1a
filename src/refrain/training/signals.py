"""Preemption: SIGTERM or SIGUSR1 finish the current batch, save ``last.ckpt`` and end the run cleanly.

Cluster schedulers warn a job with SIGTERM (or SIGUSR1 ahead of the time limit) before killing it. The
handler only records the signal; at the next training batch end every rank agrees (one all-reduce),
saves together and stops, so the checkpoint is the ordinary mid-epoch state that resumes exactly, and a
requeued job continues from it with ``--ckpt_path .../last.ckpt``. While training runs, this handler
replaces Lightning's SIGTERM notifier, which would end the epoch loop at the next batch boundary without
saving (its checkpoint-less ``SIGTERMException`` remains the fallback, caught in ``on_exception``); under
SLURM with auto-requeue, Lightning's SIGUSR1 handler (save + ``scontrol requeue``) is left in charge.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")


class GracefulStop(Callback):
    """Save ``<checkpoint dir>/last.ckpt`` and stop when one of ``signals`` arrives."""

    def __init__(
        self, signals: tuple[str, ...] | list[str] = DEFAULT_SIGNALS, filename: str = "last.ckpt"
    ) -> None:
        self.signal_names = tuple(signals)
        self.filename = filename
        self.received: int | None = None
        self.saved_path: Path | None = None
        self._previous: dict[int, Any] = {}

    # ----- handlers -----
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Install after Lightning registered its own (it does so just before the fit loop runs)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.signal_names:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            current = signal.getsignal(signum)
            if signum != signal.SIGTERM and current not in (signal.SIG_DFL, None):
                continue  # e.g. Lightning's SLURM requeue handler on SIGUSR1
            self._previous[signum] = current
            signal.signal(signum, self._handle)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:  # Lightning may already have put its originals back
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    # ----- stopping -----
    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        """Beside the run's other checkpoints (the ModelCheckpoint folder), else ``default_root_dir``."""
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                return Path(callback.dirpath) / self.filename
        return Path(trainer.default_root_dir) / "checkpoints" / self.filename

    def _save_and_stop(self, trainer: pl.Trainer) -> None:
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.saved_path = path
        trainer.should_stop = True
        name = signal.Signals(self.received).name if self.received else "SIGTERM"
        rank_zero_info(
            f"{name} at step {trainer.global_step}: saved {path}; stopping. Resume with --ckpt_path {path}"
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        local = self.received is not None or bool(trainer.received_sigterm)
        if self.saved_path is None and trainer.strategy.reduce_boolean_decision(local, all=False):
            self._save_and_stop(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Lightning stops on SIGTERM itself where our batch-end check did not run (e.g. during validation)."""
        if isinstance(exception, SIGTERMException) and self.saved_path is None:
            self.received = self.received or signal.SIGTERM
            self._save_and_stop(trainer)
