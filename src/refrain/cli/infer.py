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
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError

MODES = ("text2music", "retake", "repaint", "extend", "edit", "audio2audio", "stem", "accompany")
DTYPES = ("float32", "bfloat16", "float16")


def _common(parser: argparse.ArgumentParser, out_default: str | None) -> None:
    """Loading and output flags every invocation has."""
    parser.add_argument(
        "--bundle", type=Path, default=None, help="an exported DiT bundle (refrain-export --kind dit)"
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
        "--lora", action="append", default=[], metavar="ADAPTER[:SCALE]",
        help="a LoRA adapter folder to apply (repeatable; scale 0 switches one off)",
    )  # fmt: skip


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
    group.add_argument(
        "--guidance_decay", choices=DECAYS, help="scale decay inside the interval"
    )
    group.add_argument("--guidance_min_scale", type=float, help="scale the decay ends at (default 1.0)")
    group.add_argument("--apg_momentum", type=float, help="APG momentum (default -0.75)")
    group.add_argument("--apg_norm_threshold", type=float, help="APG norm clip (default 2.5)")
    group.add_argument("--cfg_zero_init_steps", type=int, help="CFG-zero* zeroed first steps (default 1)")
    group.add_argument("--seed", type=int, help="default: a random seed, recorded in the sidecar")


def _lyrics(parser: argparse.ArgumentParser, prefix: str = "", prompt: bool = True) -> None:
    if prompt:
        parser.add_argument(
            f"--{prefix}prompt",
            default=None if prefix == "target_" else "",
            help="style prompt (tags or a caption)",
        )
    parser.add_argument(
        f"--{prefix}lyrics",
        default=None,
        help="lyrics text: LRC lines, or plain lines with [verse]-style tags",
    )
    parser.add_argument(
        f"--{prefix}lyrics_file", type=Path, default=None, help="read the lyrics from a file (.lrc or .txt)"
    )


def _layout(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("lyrics layout (lyrics without timestamps)")
    group.add_argument("--bpm", type=float, default=100.0, help="tempo the lines are laid out at")
    group.add_argument(
        "--language", default=None, help="G2P language (en zh ja ko es fr de pt it ru); default: detect"
    )
    group.add_argument("--lyrics_format", default="auto", choices=("auto", "lrc", "structured"))
    group.add_argument("--lyrics_start", type=float, default=0.0, help="seconds before the first line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refrain-infer",
        description="Generate and edit songs with an exported refrain DiT bundle; every song gets a JSON sidecar "
        "that regenerates it.",
    )
    parser.add_argument(
        "--from_sidecar", type=Path, help="regenerate the song a sidecar describes (no sub-command)"
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    helps = {
        "text2music": "a song from a style prompt, lyrics and a duration (or a JSON-lines prompts file)",
        "retake": "a variation of a text2music song (its sidecar) at a variance in [0, 1]",
        "repaint": "regenerate [start, end] seconds of a song, keeping the rest sample-exact",
        "extend": "add seconds to the left and/or right of a song",
        "edit": "change lyrics or tags while keeping melody and arrangement (FlowEdit)",
        "audio2audio": "a new song starting from a reference song at a strength",
        "stem": "a stem (--instrument) that fits a song without it (needs a stemgen --lora)",
        "accompany": "the accompaniment that fits a vocal stem (needs a singing2accompaniment --lora)",
    }
    sub = {name: modes.add_parser(name, help=helps[name], description=helps[name]) for name in MODES}
    for name, p in sub.items():
        _common(p, f"{name}.flac")
        if name != "retake":  # a retake keeps its source's sampler options and lyrics
            _sampler(p)
            _layout(p)
    t2m = sub["text2music"]
    _lyrics(t2m)
    t2m.add_argument("--duration", type=float, default=30.0, help="seconds")
    t2m.add_argument(
        "--prompts_file",
        type=Path,
        help="JSON lines: prompt, lyrics or lyrics_file, duration, bpm, seed, name",
    )
    t2m.add_argument("--out_dir", type=Path, help="where a prompts file's songs go (default: beside --out)")
    t2m.add_argument("--batch_size", type=int, default=4, help="songs per batch with --prompts_file")
    t2m.add_argument(
        "--format", default="flac", choices=("flac", "wav"), help="file type with --prompts_file"
    )
    sub["retake"].add_argument(
        "--source_sidecar", type=Path, required=True, help="sidecar of a text2music song"
    )
    sub["retake"].add_argument(
        "--variance", type=float, default=0.5, help="0 = the same song, 1 = fresh noise"
    )
    sub["retake"].add_argument("--seed", type=int, help="seed of the new noise (default: random, recorded)")
    for name in ("repaint", "extend", "edit", "audio2audio", "stem", "accompany"):
        sub[name].add_argument(
            "--source", type=Path, required=True, help="the song: an audio file (generated or uploaded)"
        )
    for name in ("repaint", "extend", "audio2audio", "stem", "accompany"):
        _lyrics(sub[name])
    sub["stem"].add_argument("--instrument", required=True, help="the stem to generate, e.g. drums")
    rp = sub["repaint"]
    rp.add_argument("--start", type=float, required=True, help="seconds")
    rp.add_argument("--end", type=float, required=True, help="seconds")
    rp.add_argument("--variance", type=float, default=1.0, help="how far the span may move (1 = from noise)")
    rp.add_argument("--crossfade", type=float, default=0.1, help="seconds of raised-cosine fade at each seam")
    ex = sub["extend"]
    ex.add_argument("--left", type=float, default=0.0, help="seconds to add before the song")
    ex.add_argument("--right", type=float, default=0.0, help="seconds to add after the song")
    ex.add_argument("--crossfade", type=float, default=0.1, help="seconds of raised-cosine fade at each seam")
    ed = sub["edit"]
    _lyrics(ed, "source_")
    _lyrics(ed, "target_")
    ed.add_argument("--preset", default="only_lyrics", choices=("only_lyrics", "remix"))
    ed.add_argument("--n_min", type=float, help="override: edit while remaining steps > n_min * steps")
    ed.add_argument("--n_max", type=float, help="override: ... and <= n_max * steps")
    ed.add_argument("--n_avg", type=int, help="override: noises averaged per edit step")
    sub["audio2audio"].add_argument(
        "--strength", type=float, default=0.5, help="1 keeps the reference, 0 ignores it"
    )
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


def sampler_options(args: argparse.Namespace) -> Any:
    """SamplerOptions from the flags the user gave (the rest keep their defaults)."""
    from refrain.sampling.options import SamplerOptions

    given = {
        f.name: getattr(args, f.name)
        for f in fields(SamplerOptions)
        if getattr(args, f.name, None) is not None
    }
    return SamplerOptions(**given)


def read_lyrics(text: str | None, file: Path | None, flag: str) -> str | None:
    """Lyrics from --X_lyrics or --X_lyrics_file (not both); None when neither was given."""
    from refrain.text.lrc import read_text_file

    if text is not None and file is not None:
        raise RefrainInputError(
            f"--{flag}", "given both as text and as a file", f"pass --{flag} or --{flag}_file"
        )
    return read_text_file(file) if file is not None else text


def check_output(path: Path) -> Path:
    if path.suffix.lower() not in (".flac", ".wav"):
        raise RefrainInputError(path, f"cannot write {path.suffix!r} songs", "name the output .flac or .wav")
    return path


def run(args: argparse.Namespace, regenerate: bool) -> list[Path]:
    """Load the bundle, sample, save song + sidecar (+ PNG); returns the written song paths."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    dtype = getattr(torch, args.dtype)
    pipe = Pipeline.from_bundle(
        bundle, resolve_device(args.device), dtype, args.text_encoder_dir, not args.no_verify
    )
    if args.lora:
        from refrain.lora.adapters import AdapterRef
        from refrain.lora.sampling import apply_adapters

        apply_adapters(pipe, [AdapterRef.parse(text) for text in args.lora])
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
        if song.sidecar.get("unknown_phonemes"):
            print(
                f"warning: {song.sidecar['unknown_phonemes']} phoneme(s) of these lyrics are not in the bundle's "
                "vocabulary and were read as <unk> (the training data never had them)",
                file=sys.stderr,
            )
    return [song.save(path, spectrogram=args.spectrogram) for path, song in songs]


def sample_mode(pipe: Any, args: argparse.Namespace) -> list[tuple[Path, Any]]:
    """(output path, SongResult) for the chosen mode."""
    if args.mode == "retake":
        return [(args.out, pipe.retake(args.source_sidecar, args.variance, seed=args.seed))]
    options = sampler_options(args).resolved()
    layout = {
        "bpm": args.bpm,
        "language": args.language,
        "lyrics_format": args.lyrics_format,
        "lyrics_start": args.lyrics_start,
    }
    if args.mode == "edit":
        source_lyrics = read_lyrics(args.source_lyrics, args.source_lyrics_file, "source_lyrics") or ""
        target_lyrics = read_lyrics(args.target_lyrics, args.target_lyrics_file, "target_lyrics")
        song = pipe.edit(
            args.source, args.source_prompt, source_lyrics, args.target_prompt, target_lyrics, preset=args.preset,
            n_min=args.n_min, n_max=args.n_max, n_avg=args.n_avg, layout=layout, options=options,
        )  # fmt: skip
        return [(args.out, song)]
    lyrics = read_lyrics(args.lyrics, args.lyrics_file, "lyrics") or ""
    if args.mode == "text2music" and args.prompts_file is not None:
        return sample_prompts_file(pipe, args, options, layout)
    if args.mode == "text2music":
        return [
            (args.out, pipe.text2music(args.prompt, lyrics, args.duration, layout=layout, options=options))
        ]
    if args.mode == "repaint":
        song = pipe.repaint(
            args.source, args.start, args.end, args.prompt, lyrics, variance=args.variance,
            crossfade=args.crossfade, layout=layout, options=options,
        )  # fmt: skip
    elif args.mode == "stem":
        song = pipe.stem(args.source, args.instrument, args.prompt, lyrics, layout=layout, options=options)
    elif args.mode == "accompany":
        song = pipe.accompany(args.source, args.prompt, lyrics, layout=layout, options=options)
    elif args.mode == "extend":
        song = pipe.extend(
            args.source,
            args.left,
            args.right,
            args.prompt,
            lyrics,
            crossfade=args.crossfade,
            layout=layout,
            options=options,
        )
    else:
        song = pipe.audio2audio(
            args.source, args.strength, args.prompt, lyrics, layout=layout, options=options
        )
    return [(args.out, song)]


def sample_prompts_file(
    pipe: Any, args: argparse.Namespace, options: Any, layout: dict[str, Any]
) -> list[tuple[Path, Any]]:
    """Every line of a prompts file, ``--batch_size`` songs per batch; flags fill keys a line leaves out."""
    if args.batch_size < 1:
        raise RefrainInputError("--batch_size", f"must be >= 1, got {args.batch_size}", "use e.g. 4")
    from refrain.sampling.prompts_file import read_prompts

    items = read_prompts(args.prompts_file, int(options.seed))
    defaults = {"prompt": args.prompt, "duration": args.duration, **layout}
    out_dir = args.out_dir or args.out.parent
    songs = []
    for first in range(0, len(items), args.batch_size):
        chunk = items[first : first + args.batch_size]
        results = pipe.text2music_batch([{**defaults, **request} for _, request in chunk], options)
        songs += [
            (out_dir / f"{name}.{args.format}", song) for (name, _), song in zip(chunk, results, strict=True)
        ]
    return songs


if __name__ == "__main__":
    sys.exit(main())
