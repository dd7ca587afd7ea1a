"""Random audio crops from a prepared dataset, MP3-degraded in the DataLoader workers (VAE training).

Each item decodes only its crop (``load_audio`` with an offset and a duration), resamples to the model's
rate, pads a short file with zeros plus a mask, and makes the degraded copy the VAE sees as input. A
file that fails to load yields ``None`` and is quarantined (named once, then skipped without being
decoded again, ``refrain.data.quarantine``); ``collate_crops`` drops it and counts it in the batch so
the task can report the total at the end of every epoch, and the rest of the batch trains. A crop
that loads only after a repair (NaN samples zeroed, samples beyond full scale clipped) is kept and its
file named once.

Every random draw (crop offset, MP3 setting) comes from ``(seed, key)``: the training sampler yields
keys that include the epoch (``ResumableSampler(epoch_keys=True)``), so crops change every epoch, are
the same on any number of workers or GPUs, and are redrawn exactly after a resume; validation keys are
plain indices, so the held-out crops never change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from refrain.audio.io import load_audio
from refrain.audio.mp3 import Mp3Setting, mp3_roundtrip
from refrain.data.options import LoaderOptions
from refrain.data.quarantine import Quarantine
from refrain.data.resumable_sampler import ResumableDataLoader, ResumableSampler
from refrain.errors import RefrainInputError

log = logging.getLogger(__name__)

Degrader = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, Mp3Setting | None]]
LOAD_ERRORS = (RefrainInputError, OSError, RuntimeError, ValueError, sf.LibsndfileError)


class AudioCropDataset(Dataset):
    """Map-style dataset over ``(filename, duration)`` items returning fixed-length crops.

    ``dataset[key]`` serves item ``key % len(dataset)`` with random draws seeded by ``(seed, key)``.
    ``fixed_setting`` replaces the random degrader with one MP3 setting (validation's MP3 -> clean).
    """

    def __init__(
        self,
        items: Sequence[tuple[str, float]],
        sample_rate: int,
        crop_samples: int,
        channels: int = 2,
        degrader: Degrader | None = None,
        fixed_setting: Mp3Setting | None = None,
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
        self.seed = seed
        self.crops_per_item = max(1, int(crops_per_item))
        self.quarantine = Quarantine(len(self.items), "audio file")

    def __len__(self) -> int:
        return len(self.items) * self.crops_per_item

    def quarantined_files(self) -> list[str]:
        """Files skipped for the rest of the run (named once when it happened)."""
        return list(
            dict.fromkeys(self.items[i][0] for i in self.quarantine.quarantined() if i < len(self.items))
        )

    def __getitem__(self, key: int) -> dict[str, Any] | None:
        slot = int(key) % len(self.items)
        if self.quarantine.is_quarantined(slot):
            return None
        filename, duration = self.items[slot]
        rng = np.random.default_rng([self.seed, int(key)])
        crop_seconds = self.crop_samples / self.sample_rate
        offset = float(rng.uniform(0.0, max(0.0, duration - crop_seconds)))
        try:
            loaded = load_audio(filename, self.sample_rate, self.channels, offset, crop_seconds)
            if loaded.nonfinite_repaired or loaded.clipped:
                repairs = f"{loaded.nonfinite_repaired} NaN/inf samples zeroed, {loaded.clipped} clipped"
                self.quarantine.note(slot, filename, f"{repairs} in the crop at {offset:.2f} s")
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
            self.quarantine.quarantine(slot, filename, error)
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
        channels: int = 2,
        degrader: Degrader | None = None,
        val_bitrate_kbps: int = 128,
        val_items: int = 16,
        val_crops_per_item: int = 1,
        seed: int = 0,
        loader: LoaderOptions | None = None,
    ) -> None:
        """``loader``: worker processes, pinned memory and the validation batch (None = batch_size)."""
        super().__init__()
        loader = loader or LoaderOptions()
        if not dataset_path:
            raise RefrainInputError(
                "dataset_path", "not set", "pass --dataset_path PATH (a folder made by refrain-prepare)"
            )
        self.dataset_path = str(dataset_path)
        self.sample_rate = int(sample_rate)
        self.crop_samples = int(crop_samples)
        self.batch_size = int(batch_size)
        self.num_workers = int(loader.num_workers)
        self.channels = channels
        self.degrader = degrader
        self.val_setting = Mp3Setting(bitrate_kbps=int(val_bitrate_kbps))
        self.val_items = int(val_items)
        self.val_crops_per_item = int(val_crops_per_item)
        self.val_batch_size = int(loader.val_batch_size or batch_size)
        self.seed = seed
        self.pin_memory = loader.pin_memory
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
            seed=self.seed,
            crops_per_item=self.val_crops_per_item,
            **common,
        )

    def quarantined(self, stage: str = "train") -> list[str]:
        """Files of ``stage`` skipped for the rest of the run."""
        dataset = self.train_set if stage == "train" else self.val_set
        return dataset.quarantined_files() if dataset is not None else []

    def _options(self) -> dict[str, Any]:
        workers = self.num_workers
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "collate_fn": collate_crops,
            "pin_memory": self.pin_memory,
        }

    def train_dataloader(self) -> DataLoader:
        """Shuffled, per-epoch keys, exactly resumable (Lightning saves the loader's state in checkpoints)."""
        assert self.train_set is not None, "setup() first"
        drop_last = len(self.train_set) >= self.batch_size
        sampler = ResumableSampler(
            self.train_set, shuffle=True, seed=self.seed, drop_last=drop_last, epoch_keys=True
        )
        return ResumableDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            **self._options(),
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "setup() first"
        return DataLoader(self.val_set, batch_size=self.val_batch_size, shuffle=False, **self._options())
