"""repaint: regenerate [start, end) seconds of a song, keeping every other sample."""

from __future__ import annotations

import argparse
from typing import Any

from refrain.sampling.edits import frame_mask, repaint
from refrain.sampling.engine import SamplingEngine, Source
from refrain.sampling.modes.base import Layout, ModeCall, lyrics_flags, prompt_and_lyrics, register_mode
from refrain.sampling.options import SamplerOptions
from refrain.sampling.song import SongResult
from refrain.sampling.splice import splice_repaint


def _flags(parser: argparse.ArgumentParser) -> None:
    lyrics_flags(parser)
    parser.add_argument("--start", type=float, required=True, help="seconds")
    parser.add_argument("--end", type=float, required=True, help="seconds")
    parser.add_argument(
        "--variance", type=float, default=1.0, help="how far the span may move (1 = from noise)"
    )
    parser.add_argument(
        "--crossfade", type=float, default=0.1, help="seconds of raised-cosine fade at each seam"
    )


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "start": args.start,
        "end": args.end,
        **prompt_and_lyrics(args),
        "variance": args.variance,
        "crossfade": args.crossfade,
    }


@register_mode(
    "repaint",
    "regenerate [start, end] seconds of a song, keeping the rest sample-exact",
    add_flags=_flags,
    flag_params=_params,
)
def repaint_mode(
    engine: SamplingEngine,
    source: Source,
    start: float,
    end: float,
    prompt: str = "",
    lyrics: str = "",
    *,
    variance: float = 1.0,
    crossfade: float = 0.1,
    layout: Layout = None,
    options: SamplerOptions | None = None,
) -> SongResult:
    """Regenerate [start, end) seconds of a song; every sample outside it (and its crossfade) is kept."""
    call = ModeCall(engine, "repaint", options, layout, source)
    song, frames = call.song, call.song.frames
    mask = frame_mask(frames, start, end, engine.frame_rate).to(engine.device)
    timed = call.lyrics(lyrics, call.song_seconds)
    keep = (~mask).to(song.latent.dtype)[None, None]
    velocity = call.velocity(prompt, timed, frames, context=song.latent * keep, context_mask=keep)
    noise, generator = call.noise(frames)
    latent = repaint(
        velocity,
        song.latent,
        noise,
        mask,
        call.options.sigmas(),
        variance,
        call.options.solver,
        generator=generator,
        callback=call.callback,
    )
    generated = engine.decode(latent, frames * engine.vae.hop_length)
    audio = splice_repaint(song.audio, generated, start, end, engine.sample_rate, crossfade)
    return call.result(
        latent,
        audio,
        timed,
        start=start,
        end=end,
        prompt=prompt,
        lyrics=lyrics,
        variance=variance,
        crossfade=crossfade,
    )
