"""DiT training data: crops of cached (or, without a cache entry, online-encoded) conditioning.

Each item reads one record's entry from the conditioning cache, memory-mapped so only the crop's slices
are read; a record without an entry is encoded online by the same ``ConditioningEncoder`` code that
filled the cache, created once per DataLoader worker, so both paths give the same batch. A record
that cannot be loaded (missing audio, corrupt entry, NaN/inf values, bad speaker file) yields None and
is quarantined: named once, then skipped without being read again (``refrain.data.quarantine``). The
collate leaves it out, so the rest of its batch still trains, and a counter shared with the workers
counts it, so the task can log the total per epoch.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import soundfile as sf
import torch
from safetensors import SafetensorError
from torch.utils.data import DataLoader, Dataset

from refrain.data.cache import (
    EntryView,
    FileEntry,
    cache_dir,
    check_finite,
    entry_path,
    open_entry,
    other_fingerprints,
    write_entry,
)
from refrain.data.collate import collate_dit
from refrain.data.conditioning_encoder import (
    ConditioningEncoder,
    EncodeSettings,
    as_teacher_specs,
    encoder_fingerprint,
    vae_facts,
)
from refrain.data.crops import Crop, choose_crop, crop_lyrics, record_sentences, teacher_span
from refrain.data.options import LoaderOptions, OnlineEncoding
from refrain.data.prompt_variants import record_prompt_variants
from refrain.data.quarantine import Quarantine
from refrain.data.resumable_sampler import ResumableDataLoader, ResumableSampler
from refrain.data.speaker import load_speaker_embedding
from refrain.errors import RefrainInputError

log = logging.getLogger(__name__)
LOAD_ERRORS = (RefrainInputError, OSError, RuntimeError, ValueError, SafetensorError, sf.LibsndfileError)
EncoderFactory = Callable[[], ConditioningEncoder]


class DiTDataset(Dataset):
    """Map-style dataset over prepared records -> one crop dict per record (None when it fails).

    ``deterministic`` (validation) crops from frame 0. Crop start and prompt variant are drawn from
    (seed, key): the training sampler's keys include the epoch (``ResumableSampler(epoch_keys=True)``),
    so draws change every epoch, match on any number of workers and repeat exactly after a resume.
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        frame_rate: float,
        max_frames: int,
        cache_folder: str | Path | None,
        fingerprint: str,
        encoder_factory: EncoderFactory | None,
        tag_shuffles: int = 4,
        deterministic: bool = False,
        seed: int = 0,
        speaker_dim: int | None = None,
        dataset_root: str | Path | None = None,
    ) -> None:
        self.records = records
        self.frame_rate = float(frame_rate)
        self.max_frames = int(max_frames)
        self.cache_folder = Path(cache_folder) if cache_folder is not None else None
        self.fingerprint = fingerprint
        self.encoder_factory = encoder_factory
        self.tag_shuffles = int(tag_shuffles)
        self.deterministic = deterministic
        self.seed = int(seed)
        self.speaker_dim = int(speaker_dim) if speaker_dim else None
        self.dataset_root = Path(dataset_root) if dataset_root is not None else None
        self.failures = multiprocessing.Value("q", 0)  # shared with DataLoader workers
        self.quarantine = Quarantine(len(records), "DiT record")
        self._encoder: ConditioningEncoder | None = None
        self._encoder_pid: int | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_encoder"] = None  # each worker builds its own; the frozen models never travel by pickle
        state["_encoder_pid"] = None
        return state

    @property
    def skipped(self) -> int:
        return int(self.failures.value)

    def reset_skipped(self) -> int:
        with self.failures.get_lock():
            value, self.failures.value = int(self.failures.value), 0
        return value

    def _generator(self, key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(key)])

    def online_encoder(self) -> ConditioningEncoder:
        """The frozen encoders of this process, built on first use (once per DataLoader worker)."""
        if self.encoder_factory is None:
            raise RefrainInputError(
                "data.online.fallback", "online encoding is off", "run refrain-encode first"
            )
        if self._encoder is None or self._encoder_pid != os.getpid():
            self._encoder = self.encoder_factory()
            self._encoder_pid = os.getpid()
        return self._encoder

    def entry(self, record: Mapping[str, Any]) -> EntryView:
        """The record's cache entry, or its online encoding when it has none (and fallback is on)."""
        digest = str(record["content_hash"])
        if self.cache_folder is not None:
            path = entry_path(self.cache_folder, digest)
            if path.exists():
                prompts = [v.text for v in record_prompt_variants(record, self.tag_shuffles)]
                return open_entry(path, digest, self.fingerprint, prompts)
        if self.encoder_factory is None:
            raise RefrainInputError(
                str(record.get("keys") or digest),
                "no cache entry and online encoding is off",
                "run refrain-encode on the dataset, or set data.online.fallback=true",
            )
        with torch.random.fork_rng(
            devices=[]
        ):  # building and running the encoders draws no training randomness
            entry = self.online_encoder().encode_record(record)
        if self.cache_folder is not None:  # write back, so the song is encoded online only once
            try:
                write_entry(entry_path(self.cache_folder, digest), entry)
            except OSError as err:
                log.warning("could not cache %s (%s); it will be encoded online again", digest, err)
        return entry

    def _fail(self) -> None:
        with self.failures.get_lock():
            self.failures.value += 1

    def quarantined_keys(self) -> list[str]:
        """Records skipped for the rest of the run, as `key (audio file)`."""
        return [_name(self.records[i]) for i in self.quarantine.quarantined() if i < len(self.records)]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        slot = int(index) % len(self.records)
        if self.quarantine.is_quarantined(slot):
            self._fail()
            return None
        record = self.records[slot]
        try:
            entry = self.entry(record)
            rng = self._generator(index)
            crop = choose_crop(
                entry.num_frames, self.max_frames, self.frame_rate, None if self.deterministic else rng
            )
            variant = int(rng.integers(entry.num_variants))
            return self.item(entry, record, crop, variant)
        except LOAD_ERRORS as err:
            self.quarantine.quarantine(slot, _name(record), err)
            self._fail()
            return None

    def item(self, entry: EntryView, record: Mapping[str, Any], crop: Crop, variant: int) -> dict[str, Any]:
        """One crop of one entry: the same function for cached and online entries."""
        mean, std = entry.latent(crop.start, crop.start + crop.frames)
        lyrics, lyrics_text = crop_lyrics(record_sentences(record), crop)
        teachers = {}
        for name in entry.teacher_names:
            first, stop = teacher_span(crop, entry.teacher_frames(name), entry.meta.audio_seconds)
            teachers[name] = entry.teacher(name, first, stop)
        item = {
            "latent_mean": mean,
            "latent_std": std,
            "lyrics": lyrics,
            "style": entry.style(variant),
            "teacher_features": teachers,
            "key": str(record.get("keys") or ""),
            "content_hash": str(record["content_hash"]),  # the song: per-song references read it
            "filename": str(record.get("filename") or ""),
            "prompt": entry.meta.prompts[variant],
            "lyrics_text": lyrics_text,
            "crop_start": crop.start_seconds,
        }
        if self.speaker_dim:
            item["speaker"] = load_speaker_embedding(
                record.get("speaker_emb_path") or "", self.speaker_dim, self.dataset_root
            )
        tensors = {"latent_mean": mean, "latent_std": std, "style": item["style"], **teachers}
        if "speaker" in item:
            tensors["speaker"] = item["speaker"]
        online = f"online encoding of {record.get('filename')}"
        where = str(entry.path) if isinstance(entry, FileEntry) else getattr(entry, "source", online)
        check_finite(tensors, where)  # one NaN would make the whole batch's loss NaN
        return item


def _name(record: Mapping[str, Any]) -> str:
    return f"{record.get('keys') or '?'} ({record.get('filename') or 'no file'})"


class DiTDataModule(pl.LightningDataModule):
    """Train/validation DiT batches from a prepared dataset and its conditioning cache.

    ``online`` (``OnlineEncoding``) says what happens to records without a cache entry; ``loader``
    (``LoaderOptions``) how the DataLoaders run.
    """

    def __init__(
        self,
        dataset_path: str,
        vae_bundle: str,
        text_encoder_dir: str | None = None,
        teachers: Any = None,
        batch_size: int = 8,
        max_frames: int = 2048,
        seed: int = 0,
        val_items: int | None = 16,
        speaker_dim: int | None = None,
        storage: EncodeSettings | None = None,
        online: OnlineEncoding | None = None,
        loader: LoaderOptions | None = None,
    ) -> None:
        """``storage``: the cache's storage settings (part of its fingerprint, as refrain-encode used them)."""
        super().__init__()
        for name, value in (("dataset_path", dataset_path), ("vae_bundle", vae_bundle)):
            if not value:
                raise RefrainInputError(
                    name, "not set", f"pass --{name} PATH (refrain-prepare / refrain-export output)"
                )
        online, loader = online or OnlineEncoding(), loader or LoaderOptions()
        self.dataset_path = str(dataset_path)
        self.vae_bundle = str(vae_bundle)
        self.text_encoder_dir = str(text_encoder_dir) if text_encoder_dir else None
        self.teacher_specs = as_teacher_specs(teachers)
        self.settings = storage or EncodeSettings()
        self.batch_size = int(batch_size)
        self.val_batch_size = int(loader.val_batch_size or batch_size)
        self.max_frames = int(max_frames)
        self.num_workers = int(loader.num_workers)
        self.seed = int(seed)
        self.val_items = val_items
        self.use_cache = online.use_cache
        self.online_fallback = online.fallback
        self.online_device = online.device
        self.speaker_dim = speaker_dim
        self.pin_memory = loader.pin_memory
        self.cache_format, self.shards = loader.cache_format, loader.shards
        facts = vae_facts(self.vae_bundle)
        self.sample_rate = int(facts["sample_rate"])
        self.hop_length = int(facts["hop_length"])
        self.frame_rate = self.sample_rate / self.hop_length
        self.latent_channels = int(facts["latent_channels"])
        self.fingerprint = ""
        self.cache_folder: Path | None = None
        self.cached_records = 0
        self.train_set: DiTDataset | None = None
        self.val_set: DiTDataset | None = None

    def encoder_factory(self) -> EncoderFactory:
        """A picklable zero-argument builder of this config's ConditioningEncoder (online path, benches)."""
        return functools.partial(
            ConditioningEncoder.from_paths,
            self.vae_bundle,
            self.text_encoder_dir,
            self.teacher_specs,
            self.settings,
            self.online_device,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from refrain.data.schema import load_prepared

        splits = load_prepared(self.dataset_path)
        train = splits["train"]
        if len(train) == 0:
            raise RefrainInputError(
                self.dataset_path, "the train split is empty", "prepare a dataset with at least one song"
            )
        val = splits["validation"] if "validation" in splits and len(splits["validation"]) else None
        if val is None:
            log.warning(
                "%s has no validation split; validating on the first train records", self.dataset_path
            )
            val = train
        if self.val_items:
            val = val.select(range(min(len(val), int(self.val_items))))
        self.fingerprint = encoder_fingerprint(
            self.vae_bundle, self.text_encoder_dir, self.teacher_specs, self.settings
        )
        self.cache_folder = cache_dir(self.dataset_path, self.fingerprint) if self.use_cache else None
        common = {
            "frame_rate": self.frame_rate,
            "max_frames": self.max_frames,
            "cache_folder": self.cache_folder,
            "fingerprint": self.fingerprint,
            "encoder_factory": self.encoder_factory() if self.online_fallback else None,
            "tag_shuffles": self.settings.tag_shuffles,
            "seed": self.seed,
            "speaker_dim": self.speaker_dim,
            "dataset_root": self.dataset_path,
        }
        if self.cache_format == "shards":  # Arrow shards streamed per rank (refrain.data.shard_stream)
            from refrain.data.shard_stream import sharded_sets

            self.train_set, self.val_set = sharded_sets(self, train, val, common)
            return
        self._log_coverage([train, val])
        self.train_set = DiTDataset(train, **common)
        self.val_set = DiTDataset(val, deterministic=True, **common)

    def _log_coverage(self, parts: Sequence[Any]) -> None:
        if self.cache_folder is None:
            log.info("DiT data: cache off, every item is encoded online")
            return
        hashes = {str(h) for part in parts for h in part["content_hash"]}
        self.cached_records = sum(entry_path(self.cache_folder, h).exists() for h in hashes)
        missing = len(hashes) - self.cached_records
        log.info("DiT data: %d/%d records cached in %s", self.cached_records, len(hashes), self.cache_folder)
        if missing:
            others = list(other_fingerprints(self.dataset_path, self.fingerprint))
            how = "encoded online (slow)" if self.online_fallback else "skipped"
            hint = f"; caches of other encoders/settings exist: {', '.join(others)}" if others else ""
            log.warning(
                "%d records have no cache entry in %s and will be %s; run refrain-encode with the same "
                "vae_bundle, text_encoder_dir, repa teachers and storage settings%s",
                missing,
                self.cache_folder,
                how,
                hint,
            )

    def quarantined(self, stage: str = "train") -> list[str]:
        """Records of ``stage`` skipped for the rest of the run (named once when it happened)."""
        dataset = self.train_set if stage == "train" else self.val_set
        return dataset.quarantined_keys() if dataset is not None else []

    def skipped_items(self, stage: str = "train", reset: bool = False) -> int:
        """Items of ``stage`` (train | validation) that failed to load so far (across all workers)."""
        dataset = self.train_set if stage == "train" else self.val_set
        if dataset is None:
            return 0
        return dataset.reset_skipped() if reset else dataset.skipped

    def _loader(self, dataset: DiTDataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_dit,
            pin_memory=self.pin_memory,
            drop_last=shuffle and len(dataset) >= batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, epoch-keyed and exactly resumable (Lightning saves the loader's state in checkpoints)."""
        assert self.train_set is not None, "setup() first"
        if self.cache_format == "shards":
            from refrain.data.shard_stream import shard_loader

            return shard_loader(self)
        dataset, drop_last = self.train_set, len(self.train_set) >= self.batch_size
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=ResumableSampler(dataset, seed=self.seed, epoch_keys=True),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_dit,
            pin_memory=self.pin_memory,
            drop_last=drop_last,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "setup() first"
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
