"""`refrain-lora merge`: fold LoRA adapters into a base DiT bundle and write a merged bundle.

    refrain-lora merge --bundle BASE --lora exps/stems/adapter --lora exps/rap/adapter:0.5 --out MERGED

The merged bundle samples like base + adapters (``refrain-infer ... --bundle MERGED``), without PEFT at
inference and without the adapters' extra matmuls.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from refrain.errors import RefrainInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refrain-lora", description="LoRA adapter tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="fold adapters into a base bundle and write a merged bundle")
    merge.add_argument(
        "--bundle", type=Path, required=True, help="the base DiT bundle the adapters were trained on"
    )
    merge.add_argument("--lora", action="append", required=True, metavar="ADAPTER[:SCALE]", help="repeatable")
    merge.add_argument("--out", type=Path, required=True, help="the merged bundle folder to write")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    merge.add_argument(
        "--allow_other_base",
        action="store_true",
        help="merge adapters that record another base bundle hash than --bundle's",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from refrain.lora.adapters import AdapterRef
    from refrain.lora.sampling import export_merged_bundle

    try:
        refs = [AdapterRef.parse(text) for text in args.lora]
        out = export_merged_bundle(
            args.bundle, refs, args.out, overwrite=args.overwrite, allow_other_base=args.allow_other_base
        )
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
