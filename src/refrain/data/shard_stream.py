"""DiT training from the sharded cache (``data.loader.cache_format=shards``): a seeded, per-rank, resumable stream.

The order of an epoch comes from Hugging Face ``datasets``' streaming pipeline over the train records'
row numbers: ``to_iterable_dataset(num_shards)`` -> ``shuffle(seed, buffer_size)`` (shard order, then
a shuffle buffer) -> ``split_dataset_by_node(rank, world_size)`` -> ``set_epoch(epoch)``. Every rank
runs the same shuffle and keeps every ``world_size``-th record, so ranks are disjoint within an epoch,
and all ranks get the same number of batches (DDP needs that). Each record's entry is then read from
the Arrow shards (``refrain.data.shards``); a record without a row goes through the online fallback.

Exact resume: ``datasets``' own ``load_state_dict`` refills the shuffle buffer from scratch (it warns
so), which would change the order after a resume. The stream carries row numbers only, so replaying
it costs microseconds per record: the loader saves ``(epoch, batches taken)`` in the checkpoint and
the resumed run replays the same order and starts that many batches in. Batch ``b`` of a rank is made
by DataLoader worker ``(b - start) % num_workers``, so the batches do not depend on the worker count,
and crops are drawn from ``(seed, epoch, content hash)``, so they do not depend on rank or worker.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data.dataloader import _InfiniteConstantSampler

from refrain.data.cache import EntryView
from refrain.data.collate import collate_dit
from refrain.data.dit_dataset import DiTDataset
from refrain.data.prompt_variants import record_prompt_variants
from refrain.data.resumable_sampler import _CountingIterator, _world, split_key
from refrain.data.shards import ShardedCache

STATE_VERSION = 1


def hash_seed(content_hash: str) -> int:
    """A 63-bit integer of the content hash (seeds the crop of that record)."""
    return int.from_bytes(hashlib.sha256(str(content_hash).encode()).digest()[:8], "little") >> 1


class ShardedDiTDataset(DiTDataset):
    """``DiTDataset`` whose entries come from Arrow shards; keys are ``epoch * len + slot``.

    A crop is drawn from ``(seed, epoch, content hash)``: the same record in the same epoch gets the
    same crop whichever rank, worker or position it lands on.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], shards: ShardedCache, **common: Any) -> None:
        super().__init__(records, **common)
        self.shards = shards

    def entry(self, record: Mapping[str, Any]) -> EntryView:
        digest = str(record["content_hash"])
        if digest not in self.shards:
            return super().entry(record)  # the per-song entry, else the online fallback
        prompts = [v.text for v in record_prompt_variants(record, self.tag_shuffles)]
        return self.shards.entry(digest, self.fingerprint, prompts)

    def _generator(self, key: int) -> np.random.Generator:
        epoch, slot = split_key(key, len(self.records))
        digest = str(self.records[slot]["content_hash"])
        return np.random.default_rng([self.seed, epoch, hash_seed(digest)])


class ShardStream(IterableDataset):
    """This rank's collated batches of one epoch, starting ``start`` batches in.

    ``plan`` (epoch, start) is shared memory, so persistent workers see what the loader set last.
    """

    def __init__(
        self,
        items: ShardedDiTDataset,
        batch_size: int,
        seed: int,
        buffer_size: int = 1000,
        num_shards: int = 64,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        world, this_rank = _world()
        self.items = items
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.buffer_size = max(1, int(buffer_size))
        self.num_shards = max(1, min(int(num_shards), len(items)))
        self.world_size = world if world_size is None else int(world_size)
        self.rank = this_rank if rank is None else int(rank)
        self.per_rank = len(items) // self.world_size  # ranks hold equal counts; the rest waits an epoch
        if self.per_rank == 0:
            from refrain.errors import RefrainInputError

            raise RefrainInputError(
                "train split", f"{len(items)} records for {self.world_size} ranks", "train on fewer devices"
            )
        self.drop_last = self.per_rank >= self.batch_size
        self.plan = multiprocessing.Array("q", [0, 0])
        self._order: tuple[int, list[int]] | None = None
        self._records: Any = None

    def __len__(self) -> int:
        whole, rest = divmod(self.per_rank, self.batch_size)
        return whole + (1 if rest and not self.drop_last else 0)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_records": None}  # each worker builds its own stream

    def records(self) -> Any:
        """This rank's record stream (row numbers only), built once per process; ``set_epoch`` reorders it."""
        if self._records is None:
            from datasets import Dataset
            from datasets.distributed import split_dataset_by_node

            slots = Dataset.from_dict({"slot": list(range(len(self.items)))})
            stream = slots.to_iterable_dataset(num_shards=self.num_shards)
            stream = stream.shuffle(seed=self.seed, buffer_size=self.buffer_size)
            # "examples": every rank walks the same shuffled order and keeps every world_size-th record,
            # so counts differ by at most one (whole blocks per rank can differ by a block: DDP would hang).
            self._records = split_dataset_by_node(stream, self.rank, self.world_size, strategy="examples")
        return self._records

    def order(self, epoch: int) -> list[int]:
        """This rank's record slots for ``epoch``, in order (a function of seed, epoch, rank, world)."""
        if self._order is None or self._order[0] != epoch:
            records = self.records()
            records.set_epoch(int(epoch))
            order = [int(slot) for batch in records.iter(batch_size=1024) for slot in batch["slot"]]
            self._order = (int(epoch), order[: self.per_rank])
        return self._order[1]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, start = int(self.plan[0]), int(self.plan[1])
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slots, size, offset = self.order(epoch), self.batch_size, epoch * len(self.items)
        for batch in range(start + worker, len(self), workers):
            chunk = slots[batch * size : (batch + 1) * size]
            yield collate_dit([self.items[offset + slot] for slot in chunk])


def _same(batch: Any) -> Any:
    return batch


class _EpochSignal(_InfiniteConstantSampler):
    """The loader's sampler slot: Lightning calls ``sampler.set_epoch`` at every epoch start."""

    def __init__(self, loader: ShardLoader) -> None:
        super().__init__()
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)


class ShardLoader(DataLoader):
    """A DataLoader over a ``ShardStream`` whose ``state_dict`` Lightning keeps in every checkpoint.

    The state is ``(epoch, batches taken, batch size, world size)``, counted as batches leave the
    iterator (not as workers prefetch them); the same for every rank, since ranks move in step.
    """

    def __init__(self, stream: ShardStream, **kwargs: Any) -> None:
        super().__init__(stream, batch_size=None, collate_fn=_same, **kwargs)
        object.__setattr__(self, "sampler", _EpochSignal(self))  # DataLoader forbids a sampler here
        self.epoch = 0
        self.batches_taken = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self._skip = 0  # a pending resume belongs to the epoch it was saved in
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        stream: ShardStream = self.dataset  # type: ignore[assignment]
        skip, self._skip = self._skip, 0
        stream.plan[0], stream.plan[1] = self.epoch, skip
        self.batches_taken = skip
        return _CountingIterator(super().__iter__(), self)  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, Any]:
        stream: ShardStream = self.dataset  # type: ignore[assignment]
        return {
            "version": STATE_VERSION,
            "format": "shards",
            "epoch": self.epoch,
            "batches": self.batches_taken,
            "batch_size": stream.batch_size,
            "num_replicas": stream.world_size,
            "seed": stream.seed,
            "buffer_size": stream.buffer_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stream: ShardStream = self.dataset  # type: ignore[assignment]
        epoch, batches = int(state["epoch"]), int(state["batches"])
        same = all(
            state.get(name) == value
            for name, value in (
                ("format", "shards"),
                ("batch_size", stream.batch_size),
                ("num_replicas", stream.world_size),
                ("seed", stream.seed),
                ("buffer_size", stream.buffer_size),
            )
        )
        if not same:
            rank_zero_warn(
                f"the checkpoint's data stream ({state}) differs from this run's: the next epoch starts fresh"
            )
            epoch, batches = epoch + 1, 0
        if batches >= len(self):
            epoch, batches = epoch + 1, 0  # saved after the epoch's last batch
        self.epoch, self._skip = epoch, batches


def sharded_sets(module: Any, train: Any, val: Any, common: dict[str, Any]) -> tuple[Any, Any]:
    """The DataModule's train/validation datasets over its cache's shards (logs how many records have rows)."""
    import logging

    from refrain.data.shards import shards_dir

    if module.cache_folder is None:
        from refrain.errors import RefrainInputError

        raise RefrainInputError(
            "data.loader.cache_format",
            "shards with data.online.use_cache=false",
            "set data.online.use_cache=true",
        )
    shards = ShardedCache(shards_dir(module.cache_folder))
    hashes = {str(h) for part in (train, val) for h in part["content_hash"]}
    module.cached_records = sum(h in shards for h in hashes)
    missing = len(hashes) - module.cached_records
    how = "encoded online" if module.online_fallback else "skipped"
    report = logging.getLogger(__name__).warning if missing else logging.getLogger(__name__).info
    report(
        "DiT data: %d/%d records in the shards of %s%s",
        module.cached_records,
        len(hashes),
        shards.folder,
        f"; {missing} without a row will be {how}" if missing else "",
    )
    return ShardedDiTDataset(train, shards, **common), ShardedDiTDataset(
        val, shards, deterministic=True, **common
    )


def shard_loader(module: Any) -> ShardLoader:
    """The DataModule's train loader over ``ShardStream`` (its ``shards`` options: buffer, blocks)."""
    from refrain.errors import RefrainInputError

    if not isinstance(module.train_set, ShardedDiTDataset):
        raise RefrainInputError(
            "data.loader.cache_format",
            "shards is read by DiT training only (this data module selects its own records)",
            "set data.loader.cache_format=per_song",
        )
    stream = ShardStream(
        module.train_set,
        module.batch_size,
        module.seed,
        buffer_size=module.shards.buffer_size,
        num_shards=module.shards.num_shards,
    )
    workers = module.num_workers
    return ShardLoader(
        stream, num_workers=workers, persistent_workers=workers > 0, pin_memory=module.pin_memory
    )
