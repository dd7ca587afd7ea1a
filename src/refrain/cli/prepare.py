"""`refrain-prepare`: build a training dataset from an audio folder (or the embedded corpus).

    refrain-prepare --source acestep|lrc|embedded|auto --input DIR --output OUT
        [--tags_csv F] [--repeat_count N] [--val_fraction 0.1] [--language auto|en|zh|...]
        [--min_seconds 1.0] [--max_duration 1200] [--no_progress]

Prints the report (also written to OUT/report.txt), with what changed since the previous run; the
dataset a re-run replaces is kept in OUT/versions/. Bad input ends with a one-line error and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from refrain.data.sources import source_layouts
from refrain.errors import RefrainInputError
from refrain.text.scripts import LANGUAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refrain-prepare",
        description="Build a refrain/ACE-Step HF dataset (OUT/hf) with a report from an audio folder. "
        "Re-running on the same folder only processes files that changed.",
    )
    layouts = source_layouts()
    parser.add_argument(
        "--source",
        default="auto",
        choices=("auto", *layouts),
        help="folder layout: "
        + ", ".join(f"{name} ({layout.summary})" for name, layout in layouts.items())
        + ", auto (detect from the folder)",
    )
    parser.add_argument("--input", type=Path, default=None, help="the audio folder (searched recursively)")
    parser.add_argument("--output", type=Path, required=True, help="the dataset folder to create or update")
    parser.add_argument(
        "--tags_csv", type=Path, default=None, help="CSV with columns filename,tags[,language]"
    )
    parser.add_argument(
        "--repeat_count", type=int, default=1, help="repeat the train split N times (ACE-Step)"
    )
    parser.add_argument(
        "--val_fraction",
        type=float,
        default=0.1,
        help="share of songs held out for validation, rounded; at least one song when above 0 (0: none)",
    )
    parser.add_argument(
        "--language", default="auto", choices=("auto", *LANGUAGES), help="lyrics language; auto detects"
    )
    parser.add_argument("--min_seconds", type=float, default=1.0, help="skip audio shorter than this")
    parser.add_argument(
        "--max_duration",
        type=float,
        default=1200.0,
        help="skip audio longer than this many seconds (reported as too_long; 0 keeps any length)",
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run data preparation; returns the exit code (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from refrain.data.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(
        output_dir=args.output,
        source=args.source,
        input_dir=args.input,
        tags_csv=args.tags_csv,
        repeat_count=args.repeat_count,
        val_fraction=args.val_fraction,
        language=args.language,
        min_seconds=args.min_seconds,
        max_duration=args.max_duration or None,
        progress=not args.no_progress,
    )
    try:
        result = prepare_dataset(options)
    except RefrainInputError as error:
        report_text = getattr(error, "report_text", None)
        if report_text:
            print(report_text, end="")
        print(f"error: {error}", file=sys.stderr)
        return 2
    from refrain.data.report import CONSOLE_LIST_LIMIT, render_text

    print(render_text(result.report, CONSOLE_LIST_LIMIT), end="")  # report.txt lists every file
    print(f"dataset: {result.output_dir / 'hf'} (load with refrain.data.schema.load_prepared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
