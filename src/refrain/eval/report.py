"""Evaluation reports: ``eval.json`` (every figure with its inputs), ``eval.md`` (tables) and PNG plots.

``compare`` reads two ``eval.json`` files and prints the difference per metric with the sign of "better",
so two runs (or a run before and after a change) are compared without reading the tables by eye.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError
from refrain.eval.signal_metrics import HIGHER_IS_BETTER as SIGNAL_DIRECTIONS
from refrain.fileio import atomic_path

EVAL_JSON, EVAL_MD = "eval.json", "eval.md"
# +1: higher is better, -1: lower is better; metrics not listed are reported without a verdict.
DIRECTIONS: dict[str, int] = {**SIGNAL_DIRECTIONS, "fad": -1, "clap": 1, "wer": -1, "per": -1}
ROW_KEYS = ("system", "condition", "set", "prompt")


def fmt(value: Any) -> str:
    """A figure for a table: 3 significant decimals, '-' for missing or NaN."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return "-" if value is None else str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured table of ``rows`` (dicts), columns in first-seen order unless given."""
    if not rows:
        return "_no rows_\n"
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict[str, Any], markdown: str) -> Path:
    """Write ``eval.json`` and ``eval.md`` into ``out_dir`` atomically; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / EVAL_JSON) as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True, allow_nan=True))
    with atomic_path(out / EVAL_MD) as tmp:
        tmp.write_text(markdown)
    return out


def read_report(path: str | Path) -> dict[str, Any]:
    """Read an ``eval.json`` (or the folder holding one) with a one-line error."""
    path = Path(path)
    path = path / EVAL_JSON if path.is_dir() else path
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise RefrainInputError(path, "not found", "pass an eval.json written by refrain-eval") from None
    except json.JSONDecodeError as error:
        raise RefrainInputError(path, f"is not valid JSON ({error.msg})", "re-run refrain-eval") from None
    if not isinstance(report.get("rows"), list):
        raise RefrainInputError(path, "has no 'rows'", "pass an eval.json written by refrain-eval")
    return report


def _row_id(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in ROW_KEYS)


def direction(metric: str) -> int:
    """+1 if higher is better, -1 if lower is, 0 if the metric has no better side (e.g. loudness)."""
    if metric in DIRECTIONS:
        return DIRECTIONS[metric]
    return DIRECTIONS.get(metric.split("_")[0], 0)


def compare_reports(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows present in both reports: A, B, B - A per metric and whether B is better (+), worse (-), equal (=)
    or neither (a figure with no better side, such as loudness, gets ' ')."""
    b_rows = {_row_id(row): row for row in b["rows"]}
    out = []
    for row_a in a["rows"]:
        row_b = b_rows.get(_row_id(row_a))
        if row_b is None:
            continue
        label = " ".join(v for v in _row_id(row_a) if v)
        for metric, va in row_a.items():
            vb = row_b.get(metric)
            if metric in ROW_KEYS or isinstance(va, bool) or not isinstance(va, (int, float)):
                continue
            if not isinstance(vb, (int, float)) or metric in ("clips", "songs"):
                continue
            delta = float(vb) - float(va)
            sign = direction(metric)
            if math.isnan(delta) or abs(delta) < 1e-9:
                verdict = "="
            else:
                verdict = " " if sign == 0 else ("+" if delta * sign > 0 else "-")
            out.append({"row": label, "metric": metric, "A": va, "B": vb, "B-A": delta, "better": verdict})
    return out


def plot_metric_curves(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], x_key: str, out_path: str | Path, title: str
) -> Path:
    """One panel per metric: the metric against ``x_key`` (e.g. the MP3 condition), one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs: list[Any] = list(dict.fromkeys(str(r[x_key]) for r in rows))
    numeric = all(x.replace(".", "", 1).isdigit() for x in xs)
    if numeric:  # training steps: a numeric axis, not categories
        xs = sorted(float(x) for x in xs)
    systems = list(dict.fromkeys(str(r["system"]) for r in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for system in systems:
            points = {
                (float(r[x_key]) if numeric else str(r[x_key])): r.get(metric)
                for r in rows
                if r["system"] == system
            }
            ax.plot(xs, [points.get(x, float("nan")) for x in xs], marker="o", label=system)
        arrow = {1: " (higher better)", -1: " (lower better)"}.get(DIRECTIONS.get(metric, 0), "")
        ax.set_title(metric + arrow, fontsize=9)
        ax.tick_params(axis="x", rotation=0 if numeric else 45, labelsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save_figure(fig, title, out_path)


def plot_metric_bars(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    group_key: str,
    out_path: str | Path,
    title: str,
) -> Path:
    """One panel per metric: a bar per row (labelled by ``group_key``), e.g. generated vs reference, or
    base vs adapted per prompt when rows carry a ``prompt``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [m for m in metrics if any(isinstance(r.get(m), (int, float)) for r in rows)]
    fig, axes = plt.subplots(
        1, max(1, len(present)), figsize=(3.2 * max(1, len(present)), 3.2), squeeze=False
    )
    labels = [" ".join(str(r.get(k, "")) for k in (group_key, "prompt") if r.get(k)) for r in rows]
    for ax, metric in zip(axes[0], present, strict=False):
        values = [float(r.get(metric, float("nan"))) for r in rows]
        ax.bar(range(len(rows)), values, color=[f"C{i % 10}" for i in range(len(rows))])
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=7)
        arrow = {1: " (higher better)", -1: " (lower better)"}.get(direction(metric), "")
        ax.set_title(metric + arrow, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    return _save_figure(fig, title, out_path)


def _save_figure(fig: Any, title: str, out_path: str | Path) -> Path:
    """Title, lay out and write ``fig`` as a PNG atomically (no half image on failure), then free it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out_path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out
