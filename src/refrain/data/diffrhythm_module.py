"""``data=diffrhythm``: Lightning batches from a dataset imported by ``refrain-import-diffrhythm``.

Training items are the release's random crops (a fresh crop every time an item is drawn); validation uses
the first ``val_items`` songs cropped from frame 0, so its numbers are comparable across steps. A LoRA run
selects it with ``experiment=diffrhythm_lora`` (``for_lora_run``; the lora group's own module reads refrain datasets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from refrain.data.diffrhythm import DiffRhythmDataset, collate_diffrhythm
from refrain.errors import RefrainInputError


class DiffRhythmDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset_path: str | Path | None,
        batch_size: int = 8,
        max_frames: int = 2048,
        num_workers: int = 0,
        seed: int = 0,
        val_items: int = 4,
        val_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if not dataset_path:
            raise RefrainInputError(
                "dataset_path",
                "not set",
                "pass --dataset_path DIR (a folder made by refrain-import-diffrhythm)",
            )
        self.path, self.batch_size, self.max_frames = Path(dataset_path), int(batch_size), int(max_frames)
        self.num_workers, self.seed, self.val_items = int(num_workers), int(seed), int(val_items)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.train: DiffRhythmDataset | None = None
        self.val: Subset | None = None

    def setup(self, stage: str | None = None) -> None:
        self.train = DiffRhythmDataset(self.path, self.max_frames, self.seed)
        fixed = DiffRhythmDataset(self.path, self.max_frames, self.seed, random_crop=False)
        self.val = Subset(fixed, range(min(self.val_items, len(fixed))))

    def _loader(self, data: object, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,  # type: ignore[arg-type]
            collate_fn=collate_diffrhythm,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, self.val_batch_size, False)

    def skipped_items(self, stage: str = "train", reset: bool = False) -> int:
        """Import already skipped (and named) every unreadable song: nothing is skipped while training."""
        return 0

    def quarantined(self, stage: str = "train") -> list[str]:
        return []


LORA_GROUP_KEYS = ("lora_config_path", "speaker_dim", "storage", "text_max_length", "online", "loader")
"""What the lora group (conf/lora/default.yaml) sets on every DiT data module; refrain-dataset settings."""


def for_lora_run(**options: Any) -> DiffRhythmDataModule:
    """``experiment=diffrhythm_lora``: the data module under the lora group's data settings.

    Those settings describe refrain datasets (prompt-encoder storage, speaker vectors, the variant's data
    selection). DiffRhythm's data has no prompt text, speakers or stems: a speaker size is refused in one
    line, the rest does not apply and is dropped (a reference-stem variant is refused in one line when the
    task attaches its reference path: the backbone has no ``conditioner``).
    """
    lora = {key: options.pop(key) for key in LORA_GROUP_KEYS if key in options}
    if lora.get("speaker_dim"):
        raise RefrainInputError(
            "data.speaker_dim", f"{lora['speaker_dim']}, but DiffRhythm has no speaker input", "set null"
        )
    return DiffRhythmDataModule(**options)
