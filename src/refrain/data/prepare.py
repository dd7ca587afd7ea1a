"""One call from an audio folder to a prepared HF dataset on disk (what `refrain-prepare` runs).

Order of writes keeps every interruption safe: the append-only vocabulary first, then the dataset
(saved to a temporary folder and swapped in; the dataset it replaces is kept under ``versions/``, see
`refrain.data.versions`), then the state, then the report. Files whose fingerprint is unchanged since
the last run reuse their record without being decoded; a run that changes no record rewrites nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import DatasetDict
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from refrain.data.audio_checks import DEFAULT_MAX_SECONDS
from refrain.data.issues import make_issue
from refrain.data.outcome import FileOutcome
from refrain.data.process import ProcessContext, process_item
from refrain.data.report import RunFacts, build_report, write_report
from refrain.data.schema import HF_DIR, STATE_FILE, VOCAB_FILE, records_to_dataset
from refrain.data.sources import SourceItem, scan_source
from refrain.data.splits import assign_splits, describe_split
from refrain.data.state import PrepState, content_hash, file_sha256, fingerprint
from refrain.data.versions import DatasetChanges, archive_previous, diff_records, read_rows
from refrain.errors import RefrainInputError
from refrain.text.vocab import PhonemeVocab

log = logging.getLogger(__name__)
PARTIAL_DIR = HF_DIR + ".partial"
PREVIOUS_DIR = HF_DIR + ".previous"


class NoUsableAudioError(RefrainInputError):
    """No file gave a record; carries the report (written to disk too) that says why for each file."""

    def __init__(self, subject: str | Path, problem: str, fix: str, report_text: str) -> None:
        super().__init__(subject, problem, fix)
        self.report_text = report_text


@dataclass
class PrepareOptions:
    """The knobs of `refrain-prepare` (same names as its flags)."""

    output_dir: Path
    source: str = "auto"
    input_dir: Path | None = None
    tags_csv: Path | None = None
    repeat_count: int = 1
    val_fraction: float = 0.1
    language: str = "auto"
    min_seconds: float = 1.0
    max_duration: float | None = DEFAULT_MAX_SECONDS  # seconds; None keeps files of any length
    progress: bool = True
    # Records that must share a split (a multitrack song's roles): record -> group name; the split then
    # counts groups, named `split_unit` in the report.
    split_group: Callable[[dict[str, Any]], str] | None = None
    split_unit: str = "records"


@dataclass
class PrepareResult:
    """What a run produced: the dataset (None when nothing was usable), its report and work counts."""

    output_dir: Path
    dataset: DatasetDict | None
    report: dict[str, Any]
    report_text: str
    decoded: int
    reused: int
    seconds: float
    changes: DatasetChanges = field(default_factory=DatasetChanges)


def _check_options(options: PrepareOptions) -> None:
    if options.repeat_count < 1:
        raise RefrainInputError("--repeat_count", f"{options.repeat_count} is below 1", "pass 1 or more")
    if not 0.0 <= options.val_fraction < 1.0:
        raise RefrainInputError(
            "--val_fraction", f"{options.val_fraction} is outside [0, 1)", "pass e.g. 0.1"
        )
    if options.min_seconds < 0:
        raise RefrainInputError("--min_seconds", f"{options.min_seconds} is negative", "pass 0 or more")
    if options.max_duration is not None and options.max_duration <= options.min_seconds:
        raise RefrainInputError(
            "--max_duration", f"{options.max_duration} is not above --min_seconds", "pass a longer duration"
        )


def recover_interrupted_swap(output_dir: Path) -> None:
    """A run killed between the two renames leaves hf.previous but no hf: put it back. Killed after
    them, hf.previous is the replaced dataset: keep it under versions/ as the run meant to."""
    final, previous = output_dir / HF_DIR, output_dir / PREVIOUS_DIR
    if not final.exists() and previous.is_dir():
        os.replace(previous, final)
    shutil.rmtree(output_dir / PARTIAL_DIR, ignore_errors=True)
    if previous.is_dir():
        archive_previous(output_dir, previous)


def save_dataset_atomic(dataset: DatasetDict, output_dir: Path, keep_previous: bool = True) -> Path | None:
    """save_to_disk into hf.partial, then swap it in; the old hf survives any interruption. The replaced
    dataset is moved to versions/ (`keep_previous`) or deleted (when it held the same rows); returns
    the version folder that keeps it, if any."""
    final, partial, previous = output_dir / HF_DIR, output_dir / PARTIAL_DIR, output_dir / PREVIOUS_DIR
    shutil.rmtree(partial, ignore_errors=True)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        # An empty split saved with zero shards does not load back (datasets 5.2); give it one.
        empty = {name: 1 for name, split in dataset.items() if len(split) == 0}
        dataset.save_to_disk(str(partial), num_shards=empty)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    if final.exists():
        if previous.exists():
            archive_previous(output_dir, previous)
        os.replace(final, previous)
    os.replace(partial, final)
    if not previous.exists():
        return None
    if keep_previous:
        return archive_previous(output_dir, previous)
    shutil.rmtree(previous)
    return None


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]prepare[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )


def _reuse(entry: dict[str, Any], item: SourceItem) -> FileOutcome:
    """The stored outcome, with key and path refreshed (a new file with the same stem renames keys)."""
    outcome = FileOutcome.from_dict(entry["outcome"])
    outcome.key = item.key
    if outcome.record is not None:
        outcome.record.update(keys=item.key, filename=str(item.audio))
    return outcome


def _process(item: SourceItem, digest: str, ctx: ProcessContext) -> FileOutcome:
    """process_item, with a last safety net: an unexpected failure skips the file, never the run."""
    try:
        return process_item(item, digest, ctx)
    except Exception as err:  # noqa: BLE001 - one bad file must not end a long run
        log.warning("%s: unexpected failure while preparing it", item.audio, exc_info=True)
        detail = f"{type(err).__name__}: {err}"
        return FileOutcome(audio=str(item.audio), key=item.key, issues=[make_issue("failed", detail)])


def _outcomes(
    items: list[SourceItem], state: PrepState, ctx: ProcessContext, progress: bool
) -> tuple[list[FileOutcome], dict[str, dict[str, Any]], tuple[int, int]]:
    """Per-item outcomes (reused when unchanged), the new state entries, and (decoded, reused) counts."""
    outcomes, entries, decoded, reused = [], {}, 0, 0
    with _progress(progress) as bar:
        task = bar.add_task("", total=len(items))
        for item in items:
            bar.update(task, description=item.key[:40])
            if item.problem is not None:  # the scan found it unusable (a folder, a link loop, a bad name)
                outcomes.append(FileOutcome(audio=item.display, key=item.key, issues=[item.problem]))
                bar.advance(task)
                continue
            try:
                print_ = fingerprint(item)
                entry = state.reusable(item, print_)
                digest = entry["content_hash"] if entry is not None else content_hash(item)
            except OSError as err:  # vanished or unreadable since the scan: retried next run
                issue = make_issue("unreadable", f"{err.filename}: {err.strerror}")
                outcomes.append(FileOutcome(audio=str(item.audio), key=item.key, issues=[issue]))
                bar.advance(task)
                continue
            if entry is not None:
                outcome = _reuse(entry, item)
                reused += 1
            else:
                outcome = _process(item, digest, ctx)
                decoded += 1
            outcomes.append(outcome)
            if not any(i.code == "failed" for i in outcome.issues):  # failures are retried next run
                entries[str(item.audio)] = {
                    "fingerprint": print_,
                    "content_hash": digest,
                    "outcome": outcome.to_dict(),
                }
            bar.advance(task)
    return outcomes, entries, (decoded, reused)


def prepare_dataset(options: PrepareOptions) -> PrepareResult:
    """Scan, validate, (re)build changed records, split, save the dataset and write the report.

    Raises RefrainInputError for bad options/folders, and when no file is usable (after writing
    the report that says why, and without touching an earlier dataset).
    """
    started = time.perf_counter()
    _check_options(options)
    output_dir = Path(options.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(output_dir)
    input_dir = Path(options.input_dir).resolve() if options.input_dir is not None else None
    source, items = scan_source(options.source, input_dir, options.tags_csv, exclude=output_dir)
    vocab_file = output_dir / VOCAB_FILE
    vocab = PhonemeVocab.load(vocab_file) if vocab_file.is_file() else PhonemeVocab()
    state_options = {
        "source": source,
        "min_seconds": options.min_seconds,
        "max_duration": options.max_duration,
        "language": options.language,
    }
    state = PrepState.load(output_dir / STATE_FILE, state_options, file_sha256(vocab_file))
    ctx = ProcessContext(
        min_seconds=options.min_seconds,
        language=options.language,
        vocab=vocab,
        max_seconds=options.max_duration,
    )
    outcomes, entries, (decoded, reused) = _outcomes(items, state, ctx, options.progress)

    records = sorted((o.record for o in outcomes if o.record is not None), key=lambda r: r["keys"])
    train, validation = assign_splits(records, options.val_fraction, options.split_group)
    dataset = None
    changes = DatasetChanges()
    if records:
        vocab.save(vocab_file)  # atomic; append-only, so saving before the dataset is safe
        dataset = DatasetDict(
            {
                "train": records_to_dataset(train * options.repeat_count),
                "validation": records_to_dataset(validation),
            }
        )
        changes = diff_records(
            read_rows(output_dir), {name: split.to_list() for name, split in dataset.items()}
        )
        if changes.rows_changed:  # a previous hf/ is kept even when it could not be read (never deleted)
            kept = save_dataset_atomic(dataset, output_dir)
            changes.kept_as = str(kept) if kept is not None else None
    state.save(output_dir / STATE_FILE, entries, file_sha256(vocab_file))
    seconds = time.perf_counter() - started
    units = len({options.split_group(r) for r in records}) if options.split_group else len(records)
    facts = RunFacts(
        source=source,
        input_dir=str(input_dir) if input_dir is not None else "(embedded corpus)",
        output_dir=str(output_dir),
        seconds=seconds,
        decoded=decoded,
        reused=reused,
        split_sizes={"train": len(train), "validation": len(validation)},
        repeat_count=options.repeat_count,
        dataset_written=dataset is not None,
        split_note=describe_split(units, options.val_fraction, options.split_unit),
        changes=changes.to_dict() if dataset is not None else None,
    )
    report = build_report(outcomes, facts)
    text = write_report(report, output_dir)
    if dataset is None:
        where = input_dir or source
        problem = "no audio files found" if not items else f"none of the {len(items)} audio files is usable"
        raise NoUsableAudioError(
            where, problem, f"see {output_dir / 'report.txt'} for each file's reason", text
        )
    return PrepareResult(output_dir, dataset, report, text, decoded, reused, seconds, changes)
