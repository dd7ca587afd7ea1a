"""``refrain-export``: a training checkpoint -> a self-describing bundle (see ``refrain.bundles.export``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from refrain.bundles.export import EXPORTERS
from refrain.errors import RefrainInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refrain-export",
        description="Export a training checkpoint to a self-describing bundle (EMA weights, resolved config, format version).",
    )
    parser.add_argument(
        "--kind", choices=sorted(EXPORTERS), default="vae", help="what the checkpoint trains (default: vae)"
    )
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by refrain-train")
    parser.add_argument("--output", required=True, help="bundle folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    dit = parser.add_argument_group("--kind dit (defaults: what the run's config names)")
    dit.add_argument("--vae_bundle", default=None, help="the VAE bundle to copy in")
    dit.add_argument("--phoneme_vocab", default=None, help="the dataset's phoneme_vocab.json")
    dit.add_argument("--text_encoder_dir", default=None, help="the style-prompt encoder folder")
    dit.add_argument("--raw_weights", action="store_true", help="export the raw weights instead of the EMA")
    return parser


def exporter_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments the chosen exporter takes; DiT-only flags are refused for other kinds."""
    dit_options = {
        "vae_bundle": args.vae_bundle,
        "phoneme_vocab": args.phoneme_vocab,
        "text_encoder_dir": args.text_encoder_dir,
    }
    if args.kind == "dit":
        return {**dit_options, "use_ema": not args.raw_weights}
    given = [f"--{name}" for name, value in dit_options.items() if value is not None]
    if args.raw_weights:
        given.append("--raw_weights")
    if given:
        raise RefrainInputError(
            ", ".join(given), f"only apply to --kind dit, not --kind {args.kind}", "drop them"
        )
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = exporter_options(args)
        release = _ace15_release(args.checkpoint) if args.kind == "dit" else None
        if release is not None:  # a released model's run: its own folder format, not a refrain bundle
            return _export_ace15(args, options, release)
        out = EXPORTERS[args.kind](args.checkpoint, args.output, overwrite=args.overwrite, **options)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.kind} bundle: {out}")
    return 0


def _ace15_release(checkpoint: str) -> str | None:
    """The release folder of a model/dit=ace15 run's checkpoint, None for any other checkpoint (the file is
    memory-mapped here, so a large checkpoint is not read twice)."""
    import torch

    from refrain.bundles.export import checkpoint_config, load_checkpoint
    from refrain.cli.ace15 import release_of_run

    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, unreadable, missing: the checked loader says which, in one line
        loaded = load_checkpoint(checkpoint)
    if not isinstance(loaded, dict) or "refrain" not in loaded:
        return None  # the exporter reports what is wrong with it
    return release_of_run(checkpoint_config(loaded, checkpoint)[0])


def _export_ace15(args: argparse.Namespace, options: dict[str, Any], release: str) -> int:
    """An ACE-Step 1.5 run exports as the release with its weights, in diffusers' layout."""
    from refrain.cli.ace15 import export_run

    given = [
        f"--{k}" for k in ("vae_bundle", "phoneme_vocab", "text_encoder_dir") if options.get(k) is not None
    ]
    if given:
        raise RefrainInputError(
            ", ".join(given),
            "do not apply to an ACE-Step 1.5 run (the release folder holds its VAE and Qwen3)",
            "drop them",
        )
    out = export_run(args.checkpoint, args.output, args.overwrite, options["use_ema"], release)
    print(f"exported ace15 run as a diffusers folder (refrain-infer --bundle, AceStepPipeline): {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
