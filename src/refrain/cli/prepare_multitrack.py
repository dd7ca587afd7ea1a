"""``refrain-prepare-multitrack``: stem folders -> a multitrack dataset (see ``refrain.data.multitrack``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from refrain.data.multitrack import DEFAULT_STEMS, LAYOUT_FILE, prepare_multitrack
from refrain.data.report import CONSOLE_LIST_LIMIT, render_text
from refrain.errors import RefrainInputError
from refrain.text.vocab import VOCAB_FILE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refrain-prepare-multitrack",
        description="Prepare a multitrack dataset (a folder per song: mix + stems) for StemGen and "
        "singing2accompaniment LoRAs (lyric2vocal trains on its vocal stems).",
    )
    parser.add_argument("--input", type=Path, required=True, help="folder with one folder per song")
    parser.add_argument("--output", type=Path, required=True, help="the dataset folder (--dataset_path)")
    parser.add_argument(
        "--audio_dir", type=Path, default=None, help="staged role files (default OUTPUT_audio)"
    )
    parser.add_argument("--stems", default=",".join(DEFAULT_STEMS), help="stem file names, comma-separated")
    parser.add_argument(
        "--val_fraction",
        type=float,
        default=0.1,
        help="share of songs held out for validation, rounded; at least one song when above 0 (0: none)",
    )
    parser.add_argument("--language", default="auto", help="lyrics language; auto detects")
    parser.add_argument("--min_seconds", type=float, default=1.0, help="skip audio shorter than this")
    parser.add_argument(
        "--base_bundle", type=Path, default=None, help="seed the phoneme vocabulary from a DiT bundle"
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stems = [s.strip().lower() for s in args.stems.split(",") if s.strip()]
    try:
        vocab = args.base_bundle / VOCAB_FILE if args.base_bundle is not None else None
        if vocab is not None and not vocab.is_file():
            raise RefrainInputError(
                vocab, "the base bundle has no phoneme vocabulary", "pass a DiT bundle folder"
            )
        result = prepare_multitrack(
            args.input,
            args.output,
            args.audio_dir,
            stems,
            args.val_fraction,
            args.language,
            args.min_seconds,
            vocab,
            not args.no_progress,
        )
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(render_text(result.report, CONSOLE_LIST_LIMIT) if result.report else result.report_text, end="")
    for note in result.notes:
        print(f"note: {note}")
    print(f"{result.summary()}; layout {Path(args.output) / LAYOUT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
