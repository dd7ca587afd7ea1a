"""Fill the conditioning cache of a prepared dataset (what `refrain-encode` runs).

Resumable by construction: each entry is written atomically under its record's content hash, and a
re-run first checks every existing entry (structure, record, encoder, prompts; with ``verify`` also
every byte against its checksum), keeps the good ones and encodes only the rest. A record whose audio
cannot be decoded is counted and skipped; training then tries it online and skips it again.

Several ranks (``rank``/``world_size``, launched as training is: see ``refrain.cli.encode``) split the
records by content hash: rank r takes every world_size-th record of the hash-sorted list from r, so
the split depends only on the records and the world size. A rank killed part-way leaves its finished
entries; the next run redoes exactly the rest of its share. The ranks' summaries are gathered and
rank 0 alone writes index.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from refrain.data.cache import (
    CacheEntryError,
    cache_dir,
    entry_path,
    open_entry,
    summarize_entry,
    write_entry,
    write_index,
)
from refrain.data.conditioning_encoder import ConditioningEncoder, load_record_audio
from refrain.data.prompt_variants import record_prompt_variants
from refrain.data.schema import SPLITS, load_prepared
from refrain.errors import RefrainInputError

log = logging.getLogger(__name__)
AUDIO_ERRORS = (RefrainInputError, OSError, RuntimeError, ValueError, sf.LibsndfileError)
INDEX_EVERY = 25  # entries between index.json rewrites (the files are the truth; the index is a summary)


@dataclass
class BuildReport:
    """What a run did, and the numbers the README quotes (throughput, bytes per minute of audio)."""

    cache_dir: Path
    fingerprint: str
    records: int = 0  # distinct records (by content hash) in the requested splits
    encoded: int = 0
    reused: int = 0
    redone: int = 0  # entries that existed but were corrupt or stale, encoded again
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    encoded_audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    cache_bytes: int = 0
    cache_audio_seconds: float = 0.0

    @property
    def audio_seconds_per_second(self) -> float:
        return self.encoded_audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def bytes_per_audio_minute(self) -> float:
        return 60.0 * self.cache_bytes / self.cache_audio_seconds if self.cache_audio_seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"cache: {self.cache_dir}",
            f"records: {self.records} (encoded {self.encoded}, reused {self.reused}, redone {self.redone}, "
            f"failed {len(self.failed)})",
            f"encoded {self.encoded_audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s "
            f"({self.audio_seconds_per_second:.1f} s of audio per second)",
            f"cache size: {self.cache_bytes / 1e6:.2f} MB for {self.cache_audio_seconds / 60:.2f} min of audio "
            f"({self.bytes_per_audio_minute / 1e6:.3f} MB per minute)",
        ]
        lines += [f"  failed {key}: {reason}" for key, reason in self.failed]
        return "\n".join(lines)


def unique_records(dataset_path: str | Path, splits: Sequence[str] = SPLITS) -> list[dict[str, Any]]:
    """Records of the requested splits, one per content hash (ACE-Step's repeat_count duplicates rows)."""
    prepared = load_prepared(dataset_path)
    seen: dict[str, dict[str, Any]] = {}
    for split in splits:
        if split not in prepared:
            raise RefrainInputError(f"--split {split}", "no such split", f"use {', '.join(prepared)}")
        for record in prepared[split]:
            seen.setdefault(str(record["content_hash"]), record)
    return list(seen.values())


class _AudioItems(Dataset):
    """Decodes records' audio in DataLoader workers while the main process runs the encoders."""

    def __init__(self, records: Sequence[Mapping[str, Any]], encoder: ConditioningEncoder) -> None:
        self.records = list(records)
        self.sample_rate = encoder.sample_rate
        self.channels = encoder.audio_channels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return index, load_record_audio(self.records[index], self.sample_rate, self.channels), ""
        except AUDIO_ERRORS as err:
            return index, None, str(err)


def _identity(item: Any) -> Any:
    return item


def _decoded(items: _AudioItems, num_workers: int) -> Iterator[tuple[int, torch.Tensor | None, str]]:
    if num_workers <= 0:
        yield from (items[i] for i in range(len(items)))
        return
    loader = DataLoader(
        items, batch_size=None, num_workers=num_workers, collate_fn=_identity, prefetch_factor=2
    )
    yield from loader


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]encode[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


def encoder_description(encoder: ConditioningEncoder) -> dict[str, Any]:
    """What index.json records about the encoders (for people, and for the 'other caches' warning)."""
    return {
        "fingerprint": encoder.fingerprint,
        "settings": asdict(encoder.settings),
        "sample_rate": encoder.sample_rate,
        "hop_length": encoder.vae.hop_length,
        "latent_frame_rate": encoder.frame_rate,
        "latent_channels": encoder.latent_channels,
        "text_encoder": str(encoder.text_encoder.model_dir),
        "teachers": {name: encoder.teachers[name].spec.checkpoint_dir for name in encoder.teacher_names},
    }


def check_existing(
    records: Sequence[Mapping[str, Any]],
    folder: Path,
    encoder: ConditioningEncoder,
    verify: bool,
    report: BuildReport,
) -> tuple[list[Mapping[str, Any]], dict[str, dict[str, Any]]]:
    """Split records into (to encode, summaries of the valid entries); bad entries count as redone."""
    todo, entries = [], {}
    for record in records:
        digest = str(record["content_hash"])
        try:
            path = entry_path(folder, digest)
        except RefrainInputError as err:  # a record without a usable hash cannot be cached: count it
            report.failed.append((str(record.get("keys") or record.get("filename")), str(err)))
            continue
        if not path.exists():
            todo.append(record)
            continue
        prompts = [v.text for v in record_prompt_variants(record, encoder.settings.tag_shuffles)]
        try:
            entry = open_entry(path, digest, encoder.fingerprint, prompts, verify=verify)
        except CacheEntryError as err:
            log.warning("redoing %s: %s", record.get("keys"), err)
            report.redone += 1
            todo.append(record)
            continue
        entries[digest] = summarize_entry(entry, path.stat().st_size)
        report.reused += 1
    return todo, entries


def rank_share(records: Sequence[Mapping[str, Any]], rank: int, world_size: int) -> list[Mapping[str, Any]]:
    """Rank ``rank``'s records: every ``world_size``-th of the list sorted by content hash, from ``rank``."""
    ordered = sorted(records, key=lambda record: str(record["content_hash"]))
    return ordered[rank::world_size]


Gather = Callable[
    [Any], list[Any]
]  # every rank's object, in rank order (torch.distributed.all_gather_object)


def build_cache(
    dataset_path: str | Path,
    encoder: ConditioningEncoder,
    splits: Sequence[str] = SPLITS,
    verify: bool = False,
    progress: bool = True,
    num_workers: int = 0,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
) -> BuildReport:
    """Encode every record of ``splits`` (of this rank's share) that has no valid entry.

    ``limit`` caps the records considered (before the split between ranks). With ``world_size > 1``,
    ``gather`` collects the ranks' results; the report returned on rank 0 covers every rank.
    """
    if world_size > 1 and gather is None:
        raise ValueError("build_cache over several ranks needs a gather function")
    started = time.perf_counter()
    records = unique_records(dataset_path, splits)[: limit if limit is not None else None]
    folder = cache_dir(dataset_path, encoder.fingerprint)
    report = BuildReport(cache_dir=folder, fingerprint=encoder.fingerprint, records=len(records))
    todo, entries = check_existing(rank_share(records, rank, world_size), folder, encoder, verify, report)
    description = encoder_description(encoder)
    if world_size > 1:  # no partial index while ranks write: the gathered one is written at the end
        _encode(todo, folder, encoder, report, entries, progress and rank == 0, num_workers, None)
        return _merge(gather((report, entries)) if gather else [], folder, description, rank, started)
    _encode(todo, folder, encoder, report, entries, progress, num_workers, description)
    report.wall_seconds = time.perf_counter() - started
    report.cache_bytes = sum(int(e["bytes"]) for e in entries.values())
    report.cache_audio_seconds = sum(float(e["seconds"]) for e in entries.values())
    return report


def _merge(
    parts: list[tuple[BuildReport, dict[str, dict[str, Any]]]],
    folder: Path,
    description: Mapping[str, Any],
    rank: int,
    started: float,
) -> BuildReport:
    """One report and one index from every rank's (report, entries); rank 0 writes the index."""
    report = parts[rank][0]
    merged = BuildReport(cache_dir=folder, fingerprint=report.fingerprint, records=report.records)
    entries: dict[str, dict[str, Any]] = {}
    for part, part_entries in parts:
        merged.encoded += part.encoded
        merged.reused += part.reused
        merged.redone += part.redone
        merged.failed += part.failed
        merged.encoded_audio_seconds += part.encoded_audio_seconds
        entries.update(part_entries)
    if rank == 0 and entries:
        write_index(folder, description, entries)
    merged.wall_seconds = time.perf_counter() - started
    merged.cache_bytes = sum(int(e["bytes"]) for e in entries.values())
    merged.cache_audio_seconds = sum(float(e["seconds"]) for e in entries.values())
    return merged


def _encode(
    todo: Sequence[Mapping[str, Any]],
    folder: Path,
    encoder: ConditioningEncoder,
    report: BuildReport,
    entries: dict[str, dict[str, Any]],
    progress: bool,
    num_workers: int,
    description: Mapping[str, Any] | None,
) -> None:
    """Encode ``todo`` into ``folder``; ``description`` set = keep index.json up to date (single rank)."""
    try:
        with _progress(progress) as bar:
            task = bar.add_task("", total=len(todo))
            for index, audio, error in _decoded(_AudioItems(todo, encoder), num_workers):
                record = todo[index]
                key = str(record.get("keys") or record["content_hash"])
                bar.update(task, description=key[:40])
                if audio is None:
                    log.warning("skipping %s: %s", key, error)
                    report.failed.append((key, error))
                    bar.advance(task)
                    continue
                try:
                    entry = encoder.encode_record(record, audio)
                except RefrainInputError as err:
                    log.warning("skipping %s: %s", key, err)
                    report.failed.append((key, str(err)))
                    bar.advance(task)
                    continue
                size = write_entry(entry_path(folder, str(record["content_hash"])), entry)
                entries[str(record["content_hash"])] = summarize_entry(entry, size)
                report.encoded += 1
                report.encoded_audio_seconds += entry.meta.audio_seconds
                if description is not None and report.encoded % INDEX_EVERY == 0:
                    write_index(folder, description, entries)
                bar.advance(task)
    finally:  # an interrupted run still leaves an index that matches the entries written so far
        if entries and description is not None:
            write_index(folder, description, entries)
