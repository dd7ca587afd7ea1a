"""text2music: songs from a style prompt, lyrics and a duration, one or a padded batch at a time."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from refrain.errors import RefrainInputError
from refrain.models.backbone import spec_of
from refrain.sampling.edits import retake_noise
from refrain.sampling.engine import SamplingEngine
from refrain.sampling.modes.base import Layout, Outputs, lyrics_flags, lyrics_from_flags, register_mode
from refrain.sampling.options import SamplerOptions
from refrain.sampling.sidecar import resolve_identity
from refrain.sampling.solvers import sample
from refrain.sampling.song import LyricsLayout, SongRequest, SongResult

Retake = tuple[int, float, int]
"""(index of the song in its batch, variance, seed of the new noise)."""


def text2music_batch(
    engine: SamplingEngine,
    requests: Sequence[SongRequest | Mapping[str, Any]],
    options: SamplerOptions,
    retake: Retake | None = None,
) -> list[SongResult]:
    """Several songs in one batch (padded to the longest); song i uses its seed or ``options.seed + i``."""
    items = [SongRequest.from_any(r) for r in requests]
    if not items:
        raise RefrainInputError("prompts", "no song requested", "pass at least one prompt")
    base = int(options.seed) if options.seed is not None else 0
    items = [replace(r, seed=base + i if r.seed is None else r.seed) for i, r in enumerate(items)]
    items = [replace(r, timbre_audio=_absolute(r.timbre_audio)) for r in items]
    frames = [engine.frames_for(r.duration) for r in items]
    total = max(frames)
    timed = [engine.timed_lyrics(r.lyrics, r.duration, r.layout) for r in items]
    conds, noises, generators, timbres = [], [], [], {}
    for index, (request, lyrics, length) in enumerate(zip(items, timed, frames, strict=True)):
        timbre = None
        if request.timbre_audio:  # the file's identity goes to the sidecar: a changed file is refused
            timbre, timbres[index] = engine.timbre_reference(request.timbre_audio)
        conds.append(engine.conditioning(request.prompt, lyrics, length, total, timbre=timbre))
        noise, generator = engine.noise(int(request.seed), length)
        if retake is not None and retake[0] == index:
            noise = retake_noise(noise, engine.noise(retake[2], length)[0], retake[1])
        noises.append(nn.functional.pad(noise, (0, total - length)))
        generators.append(generator)
    velocity = options.guided(engine.model, spec_of(engine.model).conditioning_type.cat(conds))
    x = torch.cat(noises).to(engine.device)
    callback = engine.callback("text2music", options.steps)
    latents = sample(
        velocity, x, options.sigmas(), options.solver, generator=generators[0], callback=callback
    )
    requested = [asdict(r) for r in items]
    songs = []
    for index, (request, lyrics, length) in enumerate(zip(items, timed, frames, strict=True)):
        latent = latents[index : index + 1, :, :length]
        audio = engine.decode(latent, round(request.duration * engine.sample_rate))
        facts = {"batch": {"index": index, "requests": requested}} if len(items) > 1 else {}
        if index in timbres:
            facts["timbre_audio"] = timbres[index]
        songs.append(engine.result("text2music", requested[index], options, latent, audio, lyrics, **facts))
    return songs


def _regenerate(engine: SamplingEngine, sidecar: Mapping[str, Any], options: SamplerOptions) -> SongResult:
    """A batch song comes back from its whole batch (padding and batch size change the numbers)."""
    batch = sidecar.get("batch") or {"index": 0, "requests": [sidecar["params"]]}
    if sidecar.get("timbre_audio"):
        resolve_identity(sidecar["timbre_audio"], "timbre audio")  # unchanged since the song was made
    return text2music_batch(engine, batch["requests"], options)[int(batch["index"])]


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _flags(parser: argparse.ArgumentParser) -> None:
    lyrics_flags(parser)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument(
        "--timbre_audio",
        type=Path,
        default=None,
        help="a reference audio file for the timbre (ace15: AceStepPipeline's reference_audio)",
    )
    parser.add_argument(
        "--prompts_file",
        type=Path,
        help="JSON lines: prompt, lyrics or lyrics_file, duration, bpm, seed, name",
    )
    parser.add_argument(
        "--out_dir", type=Path, help="where a prompts file's songs go (default: beside --out)"
    )
    parser.add_argument("--batch_size", type=int, default=4, help="songs per batch with --prompts_file")
    parser.add_argument(
        "--format", default="flac", choices=("flac", "wav"), help="file type with --prompts_file"
    )


def _command(
    engine: SamplingEngine, args: argparse.Namespace, options: SamplerOptions, layout: dict[str, Any]
) -> Outputs:
    """One song, or every line of a prompts file ``--batch_size`` songs per batch (flags fill what a line
    leaves out)."""
    lyrics = lyrics_from_flags(args) or ""
    if args.prompts_file is None:
        return [
            (
                args.out,
                text2music(
                    engine,
                    args.prompt,
                    lyrics,
                    args.duration,
                    layout=layout,
                    options=options,
                    timbre_audio=args.timbre_audio,
                ),
            )
        ]
    if args.batch_size < 1:
        raise RefrainInputError("--batch_size", f"must be >= 1, got {args.batch_size}", "use e.g. 4")
    from refrain.sampling.prompts_file import read_prompts

    items = read_prompts(args.prompts_file, int(options.seed))
    defaults = {
        "prompt": args.prompt,
        "duration": args.duration,
        "timbre_audio": _absolute(args.timbre_audio),
        **layout,
    }
    out_dir = args.out_dir or args.out.parent
    songs = []
    for first in range(0, len(items), args.batch_size):
        chunk = items[first : first + args.batch_size]
        results = text2music_batch(engine, [{**defaults, **request} for _, request in chunk], options)
        songs += [
            (out_dir / f"{name}.{args.format}", song) for (name, _), song in zip(chunk, results, strict=True)
        ]
    return songs


@register_mode(
    "text2music",
    "a song from a style prompt, lyrics and a duration (or a JSON-lines prompts file)",
    add_flags=_flags,
    source=False,
    regenerate=_regenerate,
    command=_command,
)
def text2music(
    engine: SamplingEngine,
    prompt: str = "",
    lyrics: str = "",
    duration: float = 30.0,
    *,
    layout: Layout = None,
    options: SamplerOptions | None = None,
    timbre_audio: str | Path | None = None,
) -> SongResult:
    """A song from a style prompt, lyrics (LRC, or structured text laid out at ``layout.bpm``) and seconds;
    ``timbre_audio``: a reference audio file whose timbre the song takes (backbones with a timbre input)."""
    fields = asdict(LyricsLayout.from_any(layout))
    request = SongRequest(prompt, lyrics, duration, **fields, timbre_audio=_absolute(timbre_audio))
    return text2music_batch(engine, [request], (options or SamplerOptions()).resolved())[0]
