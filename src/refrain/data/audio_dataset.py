"""Random audio crops from a prepared dataset, MP3-degraded in the DataLoader workers (VAE training).

Each item decodes only its crop (``load_audio`` with an offset and a duration), resamples to the model's
rate, pads a short file with zeros plus a mask, and makes the degraded copy the VAE sees as input. A
file that fails to load yields ``None``; ``collate_crops`` drops it and counts it in the batch so the
task can report the total at the end of every epoch, and training goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from refrain.audio.io import load_audio
from refrain.audio.mp3 import Mp3Setting, mp3_roundtrip
from refrain.errors import RefrainInputError

log = logging.getLogger(__name__)

Degrader = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, Mp3Setting | None]]
LOAD_ERRORS = (RefrainInputError, OSError, RuntimeError, ValueError, sf.LibsndfileError)


class AudioCropDataset(Dataset):
    """Map-style dataset over ``(filename, duration)`` items returning fixed-length crops.

    ``deterministic`` (validation) draws every crop offset from ``(seed, index)``, so the held-out set is
    the same at every validation; training draws from a per-worker generator. ``fixed_setting`` replaces
    the random degrader with one MP3 setting (validation's MP3 -> clean measurement).
    """

    def __init__(
        self,
        items: Sequence[tuple[str, float]],
        sample_rate: int,
        crop_samples: int,
        channels: int = 2,
        degrader: Degrader | None = None,
        fixed_setting: Mp3Setting | None = None,
        deterministic: bool = False,
        seed: int = 0,
        crops_per_item: int = 1,
    ) -> None:
        if crop_samples <= 0:
            raise RefrainInputError(
                "data.crop_samples", f"must be positive, got {crop_samples}", "set a crop length"
            )
        self.items = [(str(name), float(duration)) for name, duration in items]
        self.sample_rate = int(sample_rate)
        self.crop_samples = int(crop_samples)
        self.channels = channels
        self.degrader = degrader
        self.fixed_setting = fixed_setting
        self.deterministic = deterministic
        self.seed = seed
        self.crops_per_item = max(1, int(crops_per_item))
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    def __len__(self) -> int:
        return len(self.items) * self.crops_per_item

    def _generator(self, index: int) -> np.random.Generator:
        if self.deterministic:
            return np.random.default_rng([self.seed, index])
        if self._rng is None or self._rng_pid != os.getpid():
            # torch seeds each worker differently (and per epoch without persistent workers).
            self._rng = np.random.default_rng([self.seed, torch.initial_seed() % (1 << 63)])
            self._rng_pid = os.getpid()
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        filename, duration = self.items[index % len(self.items)]
        rng = self._generator(index)
        crop_seconds = self.crop_samples / self.sample_rate
        offset = float(rng.uniform(0.0, max(0.0, duration - crop_seconds)))
        try:
            loaded = load_audio(filename, self.sample_rate, self.channels, offset, crop_seconds)
            clean, valid = self._fit(loaded.samples)
            if self.fixed_setting is not None:
                degraded, setting = (
                    mp3_roundtrip(clean, self.sample_rate, self.fixed_setting),
                    self.fixed_setting,
                )
            elif self.degrader is not None:
                degraded, setting = self.degrader(clean, rng)
            else:
                degraded, setting = clean, None
        except LOAD_ERRORS as error:
            log.warning("skipping %s: %s", filename, error)
            return None
        mask = np.zeros((1, self.crop_samples), dtype=np.float32)
        mask[:, :valid] = 1.0
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float32)),
            "degraded": torch.from_numpy(np.ascontiguousarray(degraded, dtype=np.float32)),
            "mask": torch.from_numpy(mask),
            "setting": str(setting) if setting is not None else "clean",
        }

    def _fit(self, samples: np.ndarray) -> tuple[np.ndarray, int]:
        """Trim or zero-pad to exactly ``crop_samples``; return the audio and how much of it is real."""
        valid = min(samples.shape[-1], self.crop_samples)
        if valid == 0:
            raise RefrainInputError("crop", "decoded to zero frames", "check the file")
        out = np.zeros((samples.shape[0], self.crop_samples), dtype=np.float32)
        out[:, :valid] = samples[:, :valid]
        return out, valid


def collate_crops(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack the loadable items; ``skipped`` counts the ones that failed (an all-failed batch is empty)."""
    good = [item for item in batch if item is not None]
    skipped = len(batch) - len(good)
    if not good:
        return {
            "audio": torch.empty(0),
            "degraded": torch.empty(0),
            "mask": torch.empty(0),
            "setting": [],
            "skipped": skipped,
        }
    return {
        "audio": torch.stack([item["audio"] for item in good]),
        "degraded": torch.stack([item["degraded"] for item in good]),
        "mask": torch.stack([item["mask"] for item in good]),
        "setting": [item["setting"] for item in good],
        "skipped": skipped,
    }


def _items(split: Any) -> list[tuple[str, float]]:
    return list(zip(split["filename"], split["duration"], strict=True))


class AudioCropDataModule(pl.LightningDataModule):
    """Train crops (random offset, random MP3 setting) and a fixed validation set (fixed crops, fixed bitrate)."""

    def __init__(
        self,
        dataset_path: str,
        sample_rate: int,
        crop_samples: int = 65536,
        batch_size: int = 4,
        num_workers: int = 2,
        channels: int = 2,
        degrader: Degrader | None = None,
        val_bitrate_kbps: int = 128,
        val_items: int = 16,
        val_crops_per_item: int = 1,
        val_batch_size: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if not dataset_path:
            raise RefrainInputError(
                "dataset_path", "not set", "pass --dataset_path PATH (a folder made by refrain-prepare)"
            )
        self.dataset_path = str(dataset_path)
        self.sample_rate = int(sample_rate)
        self.crop_samples = int(crop_samples)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.channels = channels
        self.degrader = degrader
        self.val_setting = Mp3Setting(bitrate_kbps=int(val_bitrate_kbps))
        self.val_items = int(val_items)
        self.val_crops_per_item = int(val_crops_per_item)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.seed = seed
        self.pin_memory = pin_memory
        self.train_set: AudioCropDataset | None = None
        self.val_set: AudioCropDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from refrain.data.schema import load_prepared

        splits = load_prepared(self.dataset_path)
        train_items = _items(splits["train"])
        if not train_items:
            raise RefrainInputError(
                self.dataset_path, "the train split is empty", "prepare a dataset with at least one song"
            )
        val_items = _items(splits["validation"]) if "validation" in splits else []
        if not val_items:
            log.warning(
                "%s has no validation split; validating on fixed crops of the first train files",
                self.dataset_path,
            )
            val_items = train_items
        common = {
            "sample_rate": self.sample_rate,
            "crop_samples": self.crop_samples,
            "channels": self.channels,
        }
        self.train_set = AudioCropDataset(train_items, degrader=self.degrader, seed=self.seed, **common)
        self.val_set = AudioCropDataset(
            val_items[: self.val_items],
            fixed_setting=self.val_setting,
            deterministic=True,
            seed=self.seed,
            crops_per_item=self.val_crops_per_item,
            **common,
        )

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_crops,
            pin_memory=self.pin_memory,
            drop_last=shuffle and len(dataset) >= batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "setup() first"
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "setup() first"
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
