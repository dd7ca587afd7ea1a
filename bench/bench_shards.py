"""Read throughput of the sharded cache vs the per-song cache, samples per second per worker, in one run.

The embedded corpus is prepared and encoded as bench/bench_cache.py does (``--tracks`` of its 28 songs,
tiny random encoders with Stable Audio Open's hop), native (fp32) and compact (bf16, pooled teacher
features); each cache is then packed into Arrow shards by ``refrain.data.loader.shards.write_shards`` (what
``refrain-encode --shards N`` runs). Both layouts are read through their real training loaders in one
process (``num_workers=0``: the rate of one loader worker): the per-song cache through
``ResumableDataLoader`` (memory-mapped safetensors, only the crop's slices are read), the shards through
``ShardLoader`` (a row is the whole entry's bytes, decoded, then cropped). The two are read in
interleaved rounds and the median rate of each is printed (a shared machine's load moves both alike).

    python bench/bench_shards.py [--tracks 8] [--batch 4] [--frames 256] [--seconds 8] [--rounds 8] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_cache import COMPACT, NATIVE, build_world, data_module

from refrain.data.cache_build import build_cache
from refrain.data.conditioning_encoder import ConditioningEncoder, EncodeSettings
from refrain.data.options import LoaderOptions, ShardReading
from refrain.data.shard_stream import ShardStream
from refrain.data.shards import write_shards


def module(dataset: Path, bundle: Path, teachers: Any, settings: EncodeSettings, fmt: str, args: Any) -> Any:
    """The benchmark's data module reading the ``fmt`` layout (per_song or shards)."""
    shards = ShardReading(buffer_size=64, num_shards=16)
    return data_module(
        dataset,
        bundle,
        teachers,
        settings,
        args,
        LoaderOptions(num_workers=0, cache_format=fmt, shards=shards),
    )


def samples_per_second(loader: Any, seconds: float, epochs: list[int]) -> float:
    """Training samples through a layout's real train loader for ``seconds``, continuing at epoch ``epochs[0]``."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        set_epoch = loader.set_epoch if hasattr(loader, "set_epoch") else loader.sampler.set_epoch
        set_epoch(epochs[0])
        for batch in loader:
            count += int(batch["latent_mean"].shape[0])
            if time.perf_counter() - start >= seconds:
                break
        epochs[0] += 1
    return count / (time.perf_counter() - start)


def order_seconds(records: int, num_shards: int = 64, buffer_size: int = 1000) -> tuple[float, float]:
    """(first epoch, later epochs) seconds to build one rank's order of ``records`` (of 8 ranks).

    Every loader worker replays it once per epoch, and a resumed run replays it to find its place.
    """
    stream = ShardStream(list(range(records)), 1, 0, buffer_size, num_shards, rank=0, world_size=8)  # type: ignore[arg-type]
    start = time.perf_counter()
    stream.order(0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    stream.order(1)
    return first, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=8, help="embedded tracks used (of 28)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=256, help="crop length in latent frames (256 = 11.9 s)")
    parser.add_argument("--seconds", type=float, default=8.0, help="reading time per layout and storage")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds; the median is printed")
    parser.add_argument("--shards", type=int, default=4, help="Arrow files per cache")
    parser.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the encoded corpus here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one loader worker's share of a machine
    with tempfile.TemporaryDirectory() as tmp:
        dataset, bundle, teachers = build_world(args.workdir or Path(tmp), args.tracks)
        rows = []
        for label, settings in (("native fp32", NATIVE), ("compact bf16", COMPACT)):
            encoder = ConditioningEncoder.from_paths(bundle, None, teachers, settings)
            folder = build_cache(dataset, encoder, ["train"], progress=False).cache_dir
            started = time.perf_counter()
            report = write_shards(folder, args.shards)
            written = time.perf_counter() - started
            loaders = {
                fmt: module(dataset, bundle, teachers, settings, fmt, args).train_dataloader()
                for fmt in ("per_song", "shards")
            }
            rounds: dict[str, list[float]] = {fmt: [] for fmt in loaders}
            epochs = {fmt: [0] for fmt in loaders}
            for _ in range(args.rounds):  # interleaved, so a busy moment of a shared machine hits both
                for fmt, loader in loaders.items():
                    rounds[fmt].append(samples_per_second(loader, args.seconds / args.rounds, epochs[fmt]))
            rates = {fmt: statistics.median(values) for fmt, values in rounds.items()}
            entries = len(list(folder.glob("*.safetensors")))
            rows.append(
                f"| {label} | {entries} files | {report.files} files, written in {written:.1f} s | "
                f"{rates['per_song']:.0f} | {rates['shards']:.0f} | {rates['shards'] / rates['per_song']:.2f} |"
            )
        print(
            f"\n{args.tracks} embedded tracks, {args.frames}-frame crops, batch {args.batch}, one process, "
            f"median of {args.rounds} interleaved rounds"
        )
        print(
            "| cache | per-song layout | shards | per-song samples/s | shards samples/s | shards / per-song |"
        )
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))
        for records in (10_000, 100_000):
            first, later = order_seconds(records)
            print(
                f"order of one epoch, {records:,} records, rank 0 of 8 (64 blocks, buffer 1000): "
                f"{first:.2f} s the first time in a process, {later:.2f} s per later epoch"
            )


if __name__ == "__main__":
    main()
