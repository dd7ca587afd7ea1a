"""Exact resume: a run continued from a checkpoint draws the same random numbers as one never stopped.

Lightning restores weights, optimizers, schedulers and loop counters; this callback adds the random
streams and makes sure the train loader's saved place inside the epoch is applied.

The RNG state is captured at the end of every training batch and put back at the start of the next,
so whatever runs between two batches (validation, plots, a new epoch's loader iterator, which draws a
seed from the global generator) never shifts the stream the training steps see. A checkpoint stores
that end-of-batch state for every rank; the resumed run puts it back before its first batch.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from refrain.training.rng_state import capture_rng_state, reseed_all, restore_rng_state

CHECKPOINT_KEY = "refrain_rng"
RANK_STRIDE = 1_000_003


class ExactResume(Callback):
    """Save/restore every RNG per rank; give each DDP rank its own stream; apply the loader's saved place.

    ``distinct_rank_streams``: ``seed_everything`` gives every rank the same seed, so without this all
    ranks would draw the same noise and timesteps for different data. Under DDP rank ``r`` (0 included)
    is reseeded from ``seed + r * 1000003`` when training starts, so its stream does not depend on what
    was drawn before (model init, Lightning's own reseed at process-group set-up, the loader's seed).
    """

    def __init__(self, distinct_rank_streams: bool = True) -> None:
        self.distinct_rank_streams = distinct_rank_streams
        self._snapshot: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None
        self._resumed = False

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        apply_pending_loader_states(trainer)
        if self._pending is not None or not self.distinct_rank_streams:
            return
        if trainer.world_size > 1:
            step = trainer.global_step if self._resumed else 0
            reseed_all(torch.initial_seed() + RANK_STRIDE * trainer.global_rank + 7919 * step)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        state = self._pending if self._pending is not None else self._snapshot
        self._pending = None
        if state is not None:
            restore_rng_state(state)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._snapshot = capture_rng_state()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = self._snapshot if self._snapshot is not None else capture_rng_state()
        ranks: list[Any] = [state]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, state)  # every rank dumps the checkpoint; rank 0 writes it
        checkpoint[CHECKPOINT_KEY] = {"version": 1, "world_size": len(ranks), "ranks": ranks}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._resumed = True
        saved = checkpoint.get(CHECKPOINT_KEY)
        if not saved:
            rank_zero_warn("the checkpoint holds no RNG state: random streams restart from the seed")
            return
        ranks = saved["ranks"]
        if len(ranks) != trainer.world_size:
            rank_zero_warn(
                f"checkpoint written by {len(ranks)} processes, resumed on {trainer.world_size}: "
                "the run continues but not bit-exactly"
            )
        rank = trainer.global_rank
        self._pending = ranks[rank] if rank < len(ranks) else None


def apply_pending_loader_states(trainer: pl.Trainer) -> bool:
    """Load train-loader states Lightning restored but did not apply; restart the loader iterator.

    Lightning applies them when it builds the train loader after restoring the loops, but a task whose
    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (the DiT's LR schedule) makes it
    build the loader earlier, and the saved position is then dropped (Lightning issue #20550).
    """
    fit_loop = trainer.fit_loop
    pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
    if not pending or fit_loop._combined_loader is None or fit_loop._data_fetcher is None:
        return False
    fit_loop._load_combined_loader_states()
    iter(fit_loop._data_fetcher)  # a fresh iterator starts at the loaded position
    return True
