"""What a preparation run did, written next to the dataset as text, JSON and a PNG.

A person reads report.txt (also printed) and report.png; tools read report.json. Every file that was
skipped, repaired or kept with a note (upmixed, downmixed, no lyrics, a non-UTF-8 lyrics file ...) is
named with its reasons, so nothing disappears or changes silently. The console shows the first
`CONSOLE_LIST_LIMIT` files of each list; report.txt and report.json hold them all.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refrain.data.issues import REASONS
from refrain.data.outcome import FileOutcome
from refrain.data.schema import REPORT_JSON, REPORT_PNG, REPORT_TXT
from refrain.data.state import write_json_atomic
from refrain.fileio import atomic_path

# Histogram bin edges in seconds: fine where songs and clips live, open-ended at the top.
DURATION_EDGES = (0, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 600, math.inf)
CONSOLE_LIST_LIMIT = 10
FILE_LISTS = (("skipped", "skipped files"), ("repaired", "repaired files"), ("noted", "kept with notes"))


@dataclass
class RunFacts:
    """Run-level facts the per-file outcomes do not carry."""

    source: str
    input_dir: str
    output_dir: str
    seconds: float
    decoded: int
    reused: int
    split_sizes: dict[str, int] = field(default_factory=dict)
    repeat_count: int = 1
    dataset_written: bool = True
    split_note: str = ""  # how the validation count came about (splits.describe_split)
    changes: dict[str, Any] | None = None  # versions.DatasetChanges.to_dict() against the previous dataset


def _bin_label(low: float, high: float) -> str:
    return f"{low:g}+ s" if math.isinf(high) else f"{low:g}-{high:g} s"


def duration_histogram(durations: list[float]) -> list[dict[str, Any]]:
    """Counts per DURATION_EDGES bin (low inclusive, high exclusive)."""
    bins = []
    for low, high in zip(DURATION_EDGES[:-1], DURATION_EDGES[1:], strict=True):
        count = sum(1 for d in durations if low <= d < high)
        bins.append({"low": low, "high": None if math.isinf(high) else high, "count": count})
    return bins


def build_report(outcomes: list[FileOutcome], facts: RunFacts) -> dict[str, Any]:
    """The machine-readable report (the text and PNG are rendered from it)."""
    kept = [o for o in outcomes if o.record is not None]
    durations = [float(o.record["duration"]) for o in kept]
    by_severity: dict[str, Counter] = {"skip": Counter(), "repair": Counter(), "note": Counter()}
    for outcome in outcomes:
        for code in {issue.code for issue in outcome.issues}:
            by_severity[REASONS[code][0]][code] += 1
    languages: dict[str, dict[str, float]] = {}
    for outcome in kept:
        entry = languages.setdefault(outcome.record["language"], {"files": 0, "hours": 0.0})
        entry["files"] += 1
        entry["hours"] += outcome.record["duration"] / 3600.0

    def listing(status: str) -> list[dict[str, Any]]:
        """Files of one status with their reasons (a skipped file's notes are left out: it is not kept)."""
        return [
            {
                "file": o.audio,
                "issues": [i.to_dict() for i in o.issues if status != "skipped" or i.severity != "note"],
            }
            for o in outcomes
            if o.status == status and o.issues
        ]

    return {
        "source": facts.source,
        "input": facts.input_dir,
        "output": facts.output_dir,
        "dataset_written": facts.dataset_written,
        "counts": {
            "found": len(outcomes),
            "kept": len(kept),
            "repaired": sum(1 for o in outcomes if o.status == "repaired"),
            "skipped": sum(1 for o in outcomes if o.status == "skipped"),
            "decoded": facts.decoded,
            "reused": facts.reused,
        },
        "skipped_by_reason": dict(sorted(by_severity["skip"].items())),
        "repaired_by_reason": dict(sorted(by_severity["repair"].items())),
        "notes_by_reason": dict(sorted(by_severity["note"].items())),
        "total_hours": sum(durations) / 3600.0,
        "splits": dict(facts.split_sizes),
        "split_rule": facts.split_note,
        "changes": facts.changes,
        "repeat_count": facts.repeat_count,
        "duration_histogram": duration_histogram(durations),
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1]["files"])),
        "seconds": facts.seconds,
        "skipped": listing("skipped"),
        "repaired": listing("repaired"),
        "noted": listing("kept"),
    }


def _reason_lines(title: str, counts: dict[str, int]) -> list[str]:
    if not counts:
        return [f"{title}: none"]
    lines = [f"{title}:"]
    width = max(20, *(len(code) for code in counts))
    lines += [f"  {code:<{width}} {n:>5}  {REASONS[code][1]}" for code, n in counts.items()]
    return lines


def _change_lines(changes: dict[str, Any] | None, limit: int | None) -> list[str]:
    """What changed against the previous dataset, every key named (the first `limit` per kind)."""
    if not changes:
        return []
    if not changes["previous"]:
        kept = changes.get("kept_as")
        return ["changes: first dataset in this folder"] + (
            [f"  an unreadable hf/ found there was kept in {kept}"] if kept else []
        )
    if not changes["rows_changed"]:
        return ["changes: none since the previous run (the dataset was left as it was)"]
    kinds = (
        ("added", "added"),
        ("replaced", "replaced"),
        ("dropped", "dropped"),
        ("moved", "moved between splits"),
    )
    counts = ", ".join(f"{label} {len(changes[name])}" for name, label in kinds)
    lines = [f"changes since the previous dataset: {counts}"]
    for name, label in kinds:
        keys = changes[name]
        if keys:
            shown = ", ".join(keys[:limit]) + (
                f", ... and {len(keys) - limit} more" if limit and len(keys) > limit else ""
            )
            lines.append(f"  {label}: {shown}")
    lines.append(
        f"  previous dataset kept in {changes['kept_as']}"
        if changes.get("kept_as")
        else "  previous dataset: not kept (no rows to keep)"
    )
    return lines


def _file_lines(report: dict[str, Any], limit: int | None) -> list[str]:
    """Each skipped, repaired and noted file with its reasons; past `limit` per list, a count."""
    lines: list[str] = []
    for name, title in FILE_LISTS:
        items = report.get(name) or []
        if not items:
            continue
        lines.append(f"{title}: {len(items)}")
        for item in items[:limit]:
            reasons = "; ".join(f"{i['code']}: {i['message']}" for i in item["issues"])
            lines.append(f"  {item['file']}: {reasons}")
        if limit is not None and len(items) > limit:
            lines.append(f"  ... and {len(items) - limit} more (all in report.txt and report.json)")
    return lines


def render_text(report: dict[str, Any], limit: int | None = None) -> str:
    """report.txt: the counts, reasons, histogram, language table and every skipped, repaired or noted
    file (the first `limit` of each list when given, for the console)."""
    counts, splits = report["counts"], report["splits"]
    lines = [
        f"refrain-prepare report for {report['output']}",
        f"source: {report['source']}  input: {report['input']}",
        f"files: found {counts['found']}, kept {counts['kept']} (of which repaired {counts['repaired']}), "
        f"skipped {counts['skipped']}",
        f"work: decoded {counts['decoded']}, reused unchanged {counts['reused']}, {report['seconds']:.2f} s",
        f"audio kept: {report['total_hours']:.3f} h",
    ]
    if report["dataset_written"]:
        train, val = splits.get("train", 0), splits.get("validation", 0)
        lines.append(
            f"splits: train {train} x repeat {report['repeat_count']} = {train * report['repeat_count']} rows,"
            f" validation {val}"
        )
        if report.get("split_rule"):
            lines.append(f"  {report['split_rule']}")
        lines += _change_lines(report.get("changes"), limit)
    else:
        lines.append("dataset: NOT written (no usable records); the previous dataset, if any, is unchanged")
    lines += _reason_lines("skipped by reason", report["skipped_by_reason"])
    lines += _reason_lines("repaired by reason", report["repaired_by_reason"])
    lines += _reason_lines("notes", report["notes_by_reason"])
    lines.append("duration histogram:")
    peak = max([b["count"] for b in report["duration_histogram"]] + [1])
    for b in report["duration_histogram"]:
        if b["count"]:
            label = _bin_label(b["low"], math.inf if b["high"] is None else b["high"])
            lines.append(f"  {label:>12} {'#' * max(1, round(30 * b['count'] / peak)):<30} {b['count']}")
    lines.append("languages:")
    for language, entry in report["languages"].items():
        lines.append(f"  {language:<14} {entry['files']:>5} files {entry['hours']:>8.3f} h")
    lines += _file_lines(report, limit)
    return "\n".join(lines) + "\n"


def render_png(report: dict[str, Any], path: Path) -> Path:
    """report.png: duration histogram and language table side by side (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = report["duration_histogram"]
    labels = [_bin_label(b["low"], math.inf if b["high"] is None else b["high"]) for b in bins]
    languages = report["languages"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.bar(range(len(bins)), [b["count"] for b in bins], color="#3b6ea5")
    left.set_xticks(range(len(bins)), labels, rotation=60, ha="right", fontsize=8)
    left.set_ylabel("files")
    left.set_title(f"durations ({report['counts']['kept']} records, {report['total_hours']:.2f} h)")
    names = list(languages) or ["(none)"]
    right.barh(names, [languages[n]["hours"] if n in languages else 0.0 for n in names], color="#a5553b")
    for index, name in enumerate(names):
        if name in languages:
            right.text(languages[name]["hours"], index, f" {languages[name]['files']} files", va="center")
    right.set_xlim(0, 1.3 * max([e["hours"] for e in languages.values()] + [1e-3]))  # room for labels
    right.invert_yaxis()
    right.set_xlabel("hours")
    right.set_title("languages")
    counts = report["counts"]
    fig.suptitle(
        f"{report['source']}: found {counts['found']}, kept {counts['kept']}, "
        f"repaired {counts['repaired']}, skipped {counts['skipped']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], output_dir: Path) -> str:
    """Write report.txt, report.json and report.png into `output_dir`; returns the text."""
    text = render_text(report)
    with atomic_path(output_dir / REPORT_TXT) as tmp:
        tmp.write_text(text, encoding="utf-8")
    write_json_atomic(output_dir / REPORT_JSON, report)
    render_png(report, output_dir / REPORT_PNG)
    return text
