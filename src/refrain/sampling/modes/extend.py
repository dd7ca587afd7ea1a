"""extend: add seconds before and/or after a song."""

from __future__ import annotations

import argparse
from typing import Any

from refrain.sampling.edits import extend, extend_latent
from refrain.sampling.engine import SamplingEngine, Source
from refrain.sampling.modes.base import Layout, ModeCall, lyrics_flags, prompt_and_lyrics, register_mode
from refrain.sampling.options import SamplerOptions
from refrain.sampling.song import SongResult
from refrain.sampling.splice import splice_extend


def _flags(parser: argparse.ArgumentParser) -> None:
    lyrics_flags(parser)
    parser.add_argument("--left", type=float, default=0.0, help="seconds to add before the song")
    parser.add_argument("--right", type=float, default=0.0, help="seconds to add after the song")
    parser.add_argument(
        "--crossfade", type=float, default=0.1, help="seconds of raised-cosine fade at each seam"
    )


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"left": args.left, "right": args.right, **prompt_and_lyrics(args), "crossfade": args.crossfade}


@register_mode(
    "extend", "add seconds to the left and/or right of a song", add_flags=_flags, flag_params=_params
)
def extend_mode(
    engine: SamplingEngine,
    source: Source,
    left: float = 0.0,
    right: float = 0.0,
    prompt: str = "",
    lyrics: str = "",
    *,
    crossfade: float = 0.1,
    layout: Layout = None,
    options: SamplerOptions | None = None,
) -> SongResult:
    """Add ``left``/``right`` seconds around a song (lyric times count from the new start)."""
    call = ModeCall(engine, "extend", options, layout, source)
    song = call.song
    left_frames, right_frames = round(left * engine.frame_rate), round(right * engine.frame_rate)
    padded, mask = extend_latent(song.latent, left_frames, right_frames)
    frames = padded.shape[-1]
    timed = call.lyrics(lyrics, frames / engine.frame_rate)
    keep = (~mask).to(song.latent.dtype)[None, None]
    velocity = call.velocity(prompt, timed, frames, context=padded, context_mask=keep)
    noise, generator = call.noise(frames)
    latent = extend(
        velocity,
        song.latent,
        noise,
        left_frames,
        right_frames,
        call.options.sigmas(),
        call.options.solver,
        generator=generator,
        callback=call.callback,
    )
    generated = engine.decode(latent, frames * engine.vae.hop_length)
    audio = splice_extend(
        song.audio, generated, left_frames * engine.vae.hop_length, engine.sample_rate, crossfade
    )
    return call.result(
        latent, audio, timed, left=left, right=right, prompt=prompt, lyrics=lyrics, crossfade=crossfade
    )
