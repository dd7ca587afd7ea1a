"""edit: FlowEdit from a song's prompt/lyrics to new ones, keeping what the two share."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from refrain.sampling.engine import SamplingEngine, Source
from refrain.sampling.flowedit import FLOWEDIT_PRESETS, flowedit, get_preset
from refrain.sampling.modes.base import Layout, ModeCall, lyrics_flags, lyrics_from_flags, register_mode
from refrain.sampling.options import SamplerOptions
from refrain.sampling.song import SongResult


def _flags(parser: argparse.ArgumentParser) -> None:
    lyrics_flags(parser, "source_")
    lyrics_flags(parser, "target_")
    parser.add_argument("--preset", default="only_lyrics", choices=tuple(FLOWEDIT_PRESETS))
    parser.add_argument("--n_min", type=float, help="override: edit while remaining steps > n_min * steps")
    parser.add_argument("--n_max", type=float, help="override: ... and <= n_max * steps")
    parser.add_argument("--n_avg", type=int, help="override: noises averaged per edit step")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "source_prompt": args.source_prompt,
        "source_lyrics": lyrics_from_flags(args, "source_") or "",
        "target_prompt": args.target_prompt,
        "target_lyrics": lyrics_from_flags(args, "target_"),
        "preset": args.preset,
        "n_min": args.n_min,
        "n_max": args.n_max,
        "n_avg": args.n_avg,
    }


@register_mode(
    "edit",
    "change lyrics or tags while keeping melody and arrangement (FlowEdit)",
    add_flags=_flags,
    flag_params=_params,
)
def edit_mode(
    engine: SamplingEngine,
    source: Source,
    source_prompt: str = "",
    source_lyrics: str = "",
    target_prompt: str | None = None,
    target_lyrics: str | None = None,
    *,
    preset: str = "only_lyrics",
    n_min: float | None = None,
    n_max: float | None = None,
    n_avg: int | None = None,
    layout: Layout = None,
    options: SamplerOptions | None = None,
) -> SongResult:
    """FlowEdit from the source's prompt/lyrics to the target's (None = unchanged), keeping what they share.

    Presets (``FLOWEDIT_PRESETS``): ``only_lyrics`` (edit the noisiest 40% of steps: new words, same song)
    and ``remix`` (n_min 0.2, n_max 0.4: a new arrangement around the same material); n_min/n_max/n_avg
    override the preset's.
    """
    chosen = get_preset(preset)
    n_min, n_max = (chosen.n_min if n_min is None else n_min), (chosen.n_max if n_max is None else n_max)
    n_avg = chosen.n_avg if n_avg is None else n_avg
    target_prompt = source_prompt if target_prompt is None else target_prompt
    target_lyrics = source_lyrics if target_lyrics is None else target_lyrics
    call = ModeCall(engine, "edit", options, layout, source)
    song = call.song
    timed_src = call.lyrics(source_lyrics, call.song_seconds)
    timed_tar = call.lyrics(target_lyrics, call.song_seconds)
    v_src = call.velocity(source_prompt, timed_src, song.frames)
    v_tar = call.velocity(target_prompt, timed_tar, song.frames)
    generator = torch.Generator().manual_seed(int(call.options.seed))
    latent = flowedit(
        v_src,
        v_tar,
        song.latent,
        call.options.sigmas(),
        n_min,
        n_max,
        n_avg,
        call.options.solver,
        generator=generator,
        callback=call.callback,
    )
    audio = engine.decode(latent, song.audio.shape[-1])
    return call.result(
        latent,
        audio,
        timed_tar,
        source_prompt=source_prompt,
        source_lyrics=source_lyrics,
        target_prompt=target_prompt,
        target_lyrics=target_lyrics,
        preset=preset,
        n_min=n_min,
        n_max=n_max,
        n_avg=n_avg,
    )
