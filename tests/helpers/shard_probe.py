"""A probe for multi-process runs over the sharded cache: every rank writes down each batch it trains on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl


def batch_signature(batch: dict[str, Any]) -> dict[str, Any]:
    """What identifies a batch: its records, crop starts and the bytes of its latents (as a sum)."""
    return {
        "keys": list(batch["keys"]),
        "crops": [round(float(c), 6) for c in batch["crop_start"]],
        "latent": float(batch["latent_mean"].double().sum()).hex(),
    }


class BatchLog(pl.Callback):
    """Append ``{"step", "epoch", batch_signature}`` per batch to ``folder/rank<R>.jsonl`` (survives a kill)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, idx: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        row = {"step": trainer.global_step, "epoch": trainer.current_epoch, **batch_signature(batch)}
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")


def read_batch_log(folder: Path, rank: int) -> list[dict[str, Any]]:
    path = Path(folder) / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
