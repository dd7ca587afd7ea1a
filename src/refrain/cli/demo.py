"""`refrain-demo` / `make demo`: the whole pipeline on the embedded corpus, on CPU, in minutes.

Each stage is a command a user would run by hand; the demo only chains them with small settings:
prepare the immich-memories-music corpus into a dataset and print its report.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from refrain.errors import RefrainInputError


def stage_prepare(out: Path) -> None:
    """Build the HF dataset (and its report) from the embedded corpus."""
    from refrain.cli.prepare import main as prepare_main

    code = prepare_main(["--source", "embedded", "--output", str(out / "dataset")])
    if code:
        raise SystemExit(code)


STAGES: dict[str, Callable[[Path], None]] = {
    "prepare": stage_prepare,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refrain-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("exps/demo"), help="where every stage writes")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of: {', '.join(STAGES)}"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        print(
            f"error: --stages {','.join(unknown)}: unknown stage. Fix: use {', '.join(STAGES)}",
            file=sys.stderr,
        )
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        started = time.perf_counter()
        print(f"\n=== refrain demo: {name} ===", flush=True)
        try:
            STAGES[name](args.output)
        except RefrainInputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"=== {name} done in {time.perf_counter() - started:.1f} s ===", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
