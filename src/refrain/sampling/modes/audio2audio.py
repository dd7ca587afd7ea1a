"""audio2audio: a new song that starts from a reference song noised to 1 - strength."""

from __future__ import annotations

import argparse
from typing import Any

from refrain.sampling.edits import audio2audio
from refrain.sampling.engine import SamplingEngine, Source
from refrain.sampling.modes.base import Layout, ModeCall, lyrics_flags, prompt_and_lyrics, register_mode
from refrain.sampling.options import SamplerOptions
from refrain.sampling.song import SongResult


def _flags(parser: argparse.ArgumentParser) -> None:
    lyrics_flags(parser)
    parser.add_argument("--strength", type=float, default=0.5, help="1 keeps the reference, 0 ignores it")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"strength": args.strength, **prompt_and_lyrics(args)}


@register_mode(
    "audio2audio",
    "a new song starting from a reference song at a strength",
    add_flags=_flags,
    flag_params=_params,
)
def audio2audio_mode(
    engine: SamplingEngine,
    source: Source,
    strength: float = 0.5,
    prompt: str = "",
    lyrics: str = "",
    *,
    layout: Layout = None,
    options: SamplerOptions | None = None,
) -> SongResult:
    """Sample from the reference song noised to sigma 1 - strength (1 keeps it, 0 ignores it)."""
    call = ModeCall(engine, "audio2audio", options, layout, source)
    song = call.song
    timed = call.lyrics(lyrics, call.song_seconds)
    noise, generator = call.noise(song.frames)
    latent = audio2audio(
        call.velocity(prompt, timed, song.frames),
        song.latent,
        noise,
        call.options.sigmas(),
        strength,
        call.options.solver,
        generator=generator,
        callback=call.callback,
    )
    audio = engine.decode(latent, song.audio.shape[-1])
    return call.result(latent, audio, timed, strength=strength, prompt=prompt, lyrics=lyrics)
