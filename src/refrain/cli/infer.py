"""`refrain-infer`: sample songs from an exported DiT bundle, one sub-command per mode.

    refrain-infer text2music  --bundle B --prompt "synth pop" --lyrics_file song.lrc --duration 60 --out song.flac
    refrain-infer text2music  --bundle B --prompts_file prompts.jsonl --out_dir songs/ [--batch_size 4]
    refrain-infer retake      --bundle B --source_sidecar song.json --variance 0.3 --out take2.flac
    refrain-infer repaint     --bundle B --source song.flac --start 20 --end 30 --prompt ... --out fixed.flac
    refrain-infer extend      --bundle B --source song.flac --right 30 --prompt ... --out longer.flac
    refrain-infer edit        --bundle B --source song.flac --source_prompt ... --source_lyrics_file a.lrc
                              --target_lyrics_file b.lrc --preset only_lyrics --out edited.flac
    refrain-infer audio2audio --bundle B --source ref.wav --strength 0.6 --prompt ... --out cover.flac
    refrain-infer stem        --bundle B --lora exps/stems/adapter --source no_drums.flac --instrument drums --out drums.flac
    refrain-infer accompany   --bundle B --lora exps/s2a/adapter --source vocals.flac --prompt "soul" --out band.flac
    refrain-infer --from_sidecar song.json --out again.flac          (regenerate; the bundle from the sidecar)
Every mode takes --lora ADAPTER[:SCALE] (repeatable) to sample with LoRA adapters on the bundle.

Every song gets a JSON sidecar beside it (same name, .json) with all parameters, the seed and the
bundle hash; ``--from_sidecar`` makes it again. Sampler options are shared by every mode (see --help of one).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any

from refrain.cli.infer_inputs import open_bundle, preflight
from refrain.errors import RefrainInputError

DTYPES = ("float32", "bfloat16", "float16")


def _common(parser: argparse.ArgumentParser, out_default: str | None) -> None:
    """Loading and output flags every invocation has."""
    parser.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="an exported DiT bundle (refrain-export --kind dit), or a DiT training checkpoint (.ckpt)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=out_default,
        help="output song, .flac or .wav (a .json sidecar goes beside it)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", default="float32", choices=DTYPES, help="DiT weights (latents stay float32)"
    )
    parser.add_argument(
        "--text_encoder_dir", default=None, help="the text encoder folder if it moved since export"
    )
    parser.add_argument(
        "--no_verify", action="store_true", help="skip hashing the bundle and text encoder files"
    )
    parser.add_argument(
        "--spectrogram", action="store_true", help="also write a log-mel PNG beside each song"
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--torch_compile",
        action="store_true",
        help="torch.compile the DiT's blocks (eager, with a one-line note, where the platform cannot compile)",
    )
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="ADAPTER[:SCALE]",
        help="a LoRA adapter folder to apply (repeatable; scale 0 switches one off)",
    )
    parser.add_argument(
        "--allow_other_base",
        action="store_true",
        help="apply adapters that record another base bundle hash than --bundle's",
    )


def _sampler(parser: argparse.ArgumentParser) -> None:
    """Every SamplerOptions field as a flag (None = the option's default); choices come from the registries."""
    from refrain.sampling.guidance import DECAYS
    from refrain.sampling.options import GUIDANCE_NAMES
    from refrain.sampling.solvers import SOLVERS

    group = parser.add_argument_group("sampler")
    group.add_argument("--steps", type=int, help="solver steps (default 60)")
    group.add_argument("--solver", choices=tuple(SOLVERS), help="default euler")
    group.add_argument("--shift", type=float, help="sigma-grid shift (default 3.0)")
    group.add_argument("--sigma_min", type=float, help="last non-zero sigma (default 0.003)")
    group.add_argument("--guidance", choices=GUIDANCE_NAMES, help="default apg")
    group.add_argument(
        "--guidance_scale",
        type=float,
        help="CFG scale; the style scale with --lyrics_guidance_scale (default 15)",
    )
    group.add_argument(
        "--lyrics_guidance_scale", type=float, help="separate lyrics scale (three passes a step)"
    )
    group.add_argument(
        "--guidance_interval", type=float, help="guided middle fraction of the steps (default 0.5)"
    )
    group.add_argument("--guidance_decay", choices=DECAYS, help="scale decay inside the interval")
    group.add_argument("--guidance_min_scale", type=float, help="scale the decay ends at (default 1.0)")
    group.add_argument("--apg_momentum", type=float, help="APG momentum (default -0.75)")
    group.add_argument("--apg_norm_threshold", type=float, help="APG norm clip (default 2.5)")
    group.add_argument("--cfg_zero_init_steps", type=int, help="CFG-zero* zeroed first steps (default 1)")
    group.add_argument("--seed", type=int, help="default: a random seed, recorded in the sidecar")


def _layout(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("lyrics layout (lyrics without timestamps)")
    group.add_argument("--bpm", type=float, default=100.0, help="tempo the lines are laid out at")
    group.add_argument(
        "--language", default=None, help="G2P language (en zh ja ko es fr de pt it ru); default: detect"
    )
    group.add_argument("--lyrics_format", default="auto", choices=("auto", "lrc", "structured"))
    group.add_argument("--lyrics_start", type=float, default=0.0, help="seconds before the first line")


def build_parser() -> argparse.ArgumentParser:
    """One sub-command per registered sampler mode (``refrain.sampling.modes``, plus LoRA's)."""
    import refrain.lora  # noqa: F401  (registers the stem and accompany modes)
    from refrain.sampling.modes import get_mode, mode_names

    parser = argparse.ArgumentParser(
        prog="refrain-infer",
        description="Generate and edit songs with an exported refrain DiT bundle; every song gets a JSON sidecar "
        "that regenerates it.",
    )
    parser.add_argument(
        "--from_sidecar", type=Path, help="regenerate the song a sidecar describes (no sub-command)"
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    for name in mode_names():
        mode = get_mode(name)
        sub = modes.add_parser(name, help=mode.summary, description=mode.summary)
        _common(sub, f"{name}.flac")
        if mode.sampler:
            _sampler(sub)
            _layout(sub)
        if mode.source:
            sub.add_argument(
                "--source", type=Path, required=True, help="the song: an audio file (generated or uploaded)"
            )
        mode.add_flags(sub)
    return parser


def build_regenerate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refrain-infer --from_sidecar", description="Regenerate a song from its sidecar."
    )
    parser.add_argument("--from_sidecar", type=Path, required=True)
    parser.add_argument(
        "--allow_other_bundle", action="store_true", help="regenerate with a different --bundle"
    )
    _common(parser, None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one mode (or a regeneration); returns the exit code (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    regenerate = any(a == "--from_sidecar" or a.startswith("--from_sidecar=") for a in argv)
    args = (build_regenerate_parser() if regenerate else build_parser()).parse_args(argv)
    try:
        for path in run(args, regenerate):
            print(path)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def sampler_options(args: argparse.Namespace, defaults: Mapping[str, Any] | None = None) -> Any:
    """SamplerOptions from the flags given; the rest from ``defaults`` (the backbone's), then the class's."""
    from refrain.sampling.options import SamplerOptions

    given = {
        f.name: getattr(args, f.name)
        for f in fields(SamplerOptions)
        if getattr(args, f.name, None) is not None
    }
    return SamplerOptions(**{**(defaults or {}), **given})


def check_output(path: Path) -> Path:
    if path.suffix.lower() not in (".flac", ".wav"):
        raise RefrainInputError(path, f"cannot write {path.suffix!r} songs", "name the output .flac or .wav")
    return path


def run(args: argparse.Namespace, regenerate: bool) -> list[Path]:
    """Load the bundle, sample, save song + sidecar (+ PNG); returns the written song paths."""
    import torch

    from refrain.cli.encode import resolve_device
    from refrain.sampling.pipeline import Pipeline
    from refrain.sampling.sidecar import read_sidecar

    sidecar = read_sidecar(args.from_sidecar) if regenerate else None
    bundle = args.bundle or (
        Path(str(sidecar["bundle"]["path"])) if sidecar and sidecar["bundle"].get("path") else None
    )
    if bundle is None:
        raise RefrainInputError(
            "--bundle", "no bundle given", "pass --bundle with a folder made by refrain-export"
        )
    if sidecar is not None and args.out is None:
        args.out = args.from_sidecar.with_name(
            f"{args.from_sidecar.stem}.again.{sidecar.get('output', {}).get('format', 'flac')}"
        )
    if args.out is not None and not getattr(args, "prompts_file", None):
        check_output(args.out)
    has_sampler = sidecar is None and hasattr(args, "steps")
    preflight(args, Path(bundle), sampler_options(args) if has_sampler else None)  # before the slow load
    dtype = getattr(torch, args.dtype)
    if resolve_device(args.device) == "cpu":
        from refrain.allocator import keep_freed_memory

        keep_freed_memory()  # the sampler's tensors re-fault freed memory between model calls otherwise
    with ExitStack() as stack:
        from refrain.models.backbones.ace15 import is_release_folder

        folder, identity = open_bundle(Path(bundle), stack)
        if is_release_folder(folder):  # an ACE-Step 1.5 release folder in diffusers' layout
            pipe = Pipeline.from_release(folder, resolve_device(args.device))
        else:
            pipe = Pipeline.from_bundle(
                folder, resolve_device(args.device), dtype, args.text_encoder_dir, not args.no_verify
            )
        if identity is not None:  # a training checkpoint: sidecars name it, and the weights' hash
            pipe.bundle_hash, pipe.bundle_path = identity, str(Path(bundle).resolve())
        return sample_and_save(pipe, args, sidecar)


def sample_and_save(pipe: Any, args: argparse.Namespace, sidecar: dict[str, Any] | None) -> list[Path]:
    """Adapters on, the mode (or the regeneration) run under a progress bar, songs and sidecars saved."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if args.lora:
        from refrain.lora.adapters import AdapterRef
        from refrain.lora.sampling import apply_adapters

        apply_adapters(pipe, [AdapterRef.parse(text) for text in args.lora], args.allow_other_base)
    if getattr(args, "torch_compile", False):  # after the adapters, so the compiled blocks hold them
        from refrain.models.compile import compile_blocks

        note = compile_blocks(pipe.model)
        if note:
            print(f"note: {note}", file=sys.stderr)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=args.no_progress, transient=True) as bar:
        task = bar.add_task("loading", total=None)
        pipe.progress = lambda mode, done, total: bar.update(
            task, description=mode, completed=done, total=total
        )
        if sidecar is not None:
            songs = [(args.out, pipe.regenerate(sidecar, allow_other_bundle=args.allow_other_bundle))]
        else:
            songs = sample_mode(pipe, args)
    for _, song in songs:
        for note in song.sidecar.get("lyrics_notes") or []:
            print(f"note: lyrics: {note}", file=sys.stderr)
        if song.sidecar.get("unknown_phonemes"):
            print(
                f"warning: {song.sidecar['unknown_phonemes']} phoneme(s) of these lyrics are not in the bundle's "
                "vocabulary and were read as <unk> (the training data never had them)",
                file=sys.stderr,
            )
    return [song.save(path, spectrogram=args.spectrogram) for path, song in songs]


def sample_mode(pipe: Any, args: argparse.Namespace) -> list[tuple[Path, Any]]:
    """(output path, SongResult) pairs of the chosen mode, called through its registry entry."""
    from refrain.sampling.modes import get_mode

    mode = get_mode(args.mode)
    from refrain.models.backbone import spec_of

    defaults = spec_of(pipe.model).sampler_defaults  # e.g. ACE-Step 1.5: 8 steps, APG 7 over time
    options = sampler_options(args, defaults).resolved() if mode.sampler else None
    layout = (
        {
            "bpm": args.bpm,
            "language": args.language,
            "lyrics_format": args.lyrics_format,
            "lyrics_start": args.lyrics_start,
        }
        if mode.sampler
        else {}
    )
    if mode.command is not None:
        return mode.command(pipe, args, options, layout)
    params = {"source": args.source} if mode.source else {}
    params.update(mode.flag_params(args))
    if mode.sampler:
        params.update(layout=layout, options=options)
    return [(args.out, mode.run(pipe, **params))]


if __name__ == "__main__":
    sys.exit(main())
