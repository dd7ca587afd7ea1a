"""A shuffling sampler whose place inside the epoch survives a checkpoint, and the loader that saves it.

Lightning saves the ``state_dict`` of every train DataLoader that has one with the fit loop's state and
hands it back through ``load_state_dict`` on ``--ckpt_path``. What must be saved is how many batches the
loop has *taken*, not how far the sampler ran ahead to feed prefetching workers, so the loader counts
batches as they leave its iterator; the sampler then restarts the same (seed, epoch) permutation that
many samples in. ``epoch_keys`` makes the sampler yield ``epoch * len(dataset) + index``: a dataset that
draws its crops and noise from ``(seed, key)`` instead of worker RNG redraws exactly the same item after
a resume (``split_key`` recovers the item index).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

STATE_VERSION = 1


def split_key(key: int, length: int) -> tuple[int, int]:
    """``(epoch, index)`` of a key yielded by ``ResumableSampler(epoch_keys=True)`` over ``length`` items."""
    epoch, index = divmod(int(key), int(length))
    return epoch, index


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` (so Lightning keeps it) that can start an epoch part-way through.

    The global order of an epoch is a fixed function of ``(seed, epoch)``; rank ``r`` of ``W`` takes
    every ``W``-th entry from ``r``, as torch's sampler does, so the ranks' batches together are the
    single-process run's batches. ``resume(epoch, consumed)`` skips the first ``consumed`` entries of the
    global order for the next pass (rounded down to a multiple of ``W`` so ranks stay in step when the
    world size changed since the checkpoint).
    """

    def __init__(
        self,
        dataset: Sized,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        epoch_keys: bool = False,
    ) -> None:
        world, this_rank = _world()
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=world if num_replicas is None else num_replicas,
            rank=this_rank if rank is None else rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.epoch_keys = epoch_keys
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start; a pending skip belongs to the epoch it was saved in."""
        if int(epoch) != self.epoch:
            self._skip = 0
        super().set_epoch(int(epoch))

    def resume(self, epoch: int, consumed: int) -> None:
        """Start the next pass at global position ``consumed`` of epoch ``epoch``."""
        self.epoch = int(epoch)
        consumed = max(0, min(int(consumed), self.total_size))
        self._skip = consumed - consumed % self.num_replicas

    def global_order(self) -> list[int]:
        """Every rank's indices of this epoch, interleaved, padded or trimmed to ``total_size``."""
        length = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(length, generator=generator).tolist()
        else:
            order = list(range(length))
        if self.drop_last:
            return order[: self.total_size]
        padding = self.total_size - len(order)
        if padding > 0:
            order += (order * math.ceil(padding / max(1, len(order))))[:padding]
        return order

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        mine = self.global_order()[skip + self.rank :: self.num_replicas]
        offset = self.epoch * len(self.dataset) if self.epoch_keys else 0  # type: ignore[arg-type]
        return iter([offset + index for index in mine])


class _CountingIterator(Iterator[Any]):
    """Wraps a DataLoader iterator and counts the batches handed to the training loop."""

    def __init__(self, inner: Iterator[Any], owner: ResumableDataLoader) -> None:
        self.inner = inner
        self.owner = owner

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.owner.batches_taken += 1
        return batch

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


class ResumableDataLoader(DataLoader):
    """A DataLoader over a ``ResumableSampler`` with ``state_dict``/``load_state_dict`` for Lightning.

    The state is ``(epoch, batches taken, batch size, world size)``; loading it makes the next iterator
    continue the interrupted epoch, and the count keeps growing from there, so a second resume in the
    same epoch lands in the right place too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs sampler=ResumableSampler(...)")
        self.batches_taken = 0
        self._resume_batches = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        inner = super().__iter__()
        self.batches_taken, self._resume_batches = self._resume_batches, 0
        return _CountingIterator(inner, self)

    def state_dict(self) -> dict[str, Any]:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        return {
            "version": STATE_VERSION,
            "epoch": sampler.epoch,
            "batches": self.batches_taken,
            "batch_size": int(self.batch_size or 1),
            "num_replicas": sampler.num_replicas,
            "seed": sampler.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        epoch, batches = int(state["epoch"]), int(state["batches"])
        consumed = batches * int(state["batch_size"]) * int(state["num_replicas"])
        if consumed >= sampler.total_size or (
            int(state["num_replicas"]) == sampler.num_replicas and batches >= len(self)
        ):
            epoch, consumed = epoch + 1, 0  # saved after the epoch's last batch
        sampler.resume(epoch, consumed)
        self._resume_batches = sampler._skip // (int(self.batch_size or 1) * sampler.num_replicas)
