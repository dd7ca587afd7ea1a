"""Option groups of the DiT data module, each built from its own config node and handed in whole.

They keep ``DiTDataModule``'s signature to what a reader must know (which dataset, which encoders, how
big a batch) and name the rest by concern: how a record without a cache entry is treated, and how the
loaders run. The storage settings (``EncodeSettings``) live with the encoders whose output they shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from refrain.errors import RefrainInputError


@dataclass(frozen=True)
class OnlineEncoding:
    """Records without a cache entry: encode them online on ``device`` (``fallback``) or skip and count them.

    ``use_cache=False`` encodes every item online (the bench's baseline).
    """

    use_cache: bool = True
    fallback: bool = True
    device: str = "cpu"  # where loader workers run the frozen encoders

    def __post_init__(self) -> None:
        if not self.use_cache and not self.fallback:
            raise RefrainInputError(
                "data.online.use_cache",
                "false while data.online.fallback is false too",
                "allow one of the two",
            )


@dataclass(frozen=True)
class ShardReading:
    """How training streams a sharded cache (``cache_format=shards``, ``refrain.data.shard_stream``).

    ``buffer_size``: the shuffle buffer of the record stream; ``num_shards``: the blocks of records
    whose order is shuffled before the buffer.
    """

    buffer_size: int = 1000
    num_shards: int = 64


@dataclass(frozen=True)
class LoaderOptions:
    """How the DataLoaders run: worker processes, pinned memory, the validation batch (None = batch_size).

    ``cache_format``: ``per_song`` (a safetensors file per song, read by a shuffling sampler) or
    ``shards`` (Arrow shards from ``refrain-encode --shards N``, streamed per rank as ``shards`` says).
    """

    num_workers: int = 2
    pin_memory: bool = False
    val_batch_size: int | None = None
    cache_format: str = "per_song"
    shards: ShardReading = field(default_factory=ShardReading)

    def __post_init__(self) -> None:
        if self.cache_format not in ("per_song", "shards"):
            raise RefrainInputError(
                "data.loader.cache_format",
                f"{self.cache_format!r} is not a cache format",
                "use per_song or shards",
            )
