"""The sampler-mode registry and the steps every mode repeats.

A mode is one function registered with ``register_mode``: its keyword arguments are the ``params`` its
sidecar records, so the pipeline, ``refrain-infer`` and regeneration all call it the same way
(``mode.run(engine, **params, options=options)``). Its ``SamplerMode`` also says how the command line
reaches it (its own flags and how they become ``params``), so adding a mode is one file plus its test.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.models.dit.conditioning import DiTConditioning
from refrain.sampling.engine import SamplingEngine, Source
from refrain.sampling.guided import GuidedVelocity
from refrain.sampling.lyrics_prep import TimedLyrics
from refrain.sampling.options import SamplerOptions
from refrain.sampling.song import LyricsLayout, SongResult

Layout = LyricsLayout | Mapping[str, Any] | None
Outputs = list[tuple[Path, SongResult]]


class ModeFn(Protocol):
    def __call__(self, engine: SamplingEngine, *args: Any, **kwargs: Any) -> SongResult: ...


def _no_flags(parser: argparse.ArgumentParser) -> None:
    return None


def _no_params(args: argparse.Namespace) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class SamplerMode:
    """One mode: what it does, the function that does it, and how the CLI and a sidecar call it.

    ``add_flags``/``flag_params``: its own ``refrain-infer NAME`` flags and those flags as ``run``'s
    keywords. ``source``: it takes a source song (``--source``; its file is re-checked on regeneration).
    ``sampler``: it takes the shared sampler and lyrics-layout flags (``options``/``layout`` keywords).
    ``regenerate`` replaces the plain replay of a sidecar, ``command`` the plain CLI call (one song).
    """

    name: str
    summary: str
    run: ModeFn
    add_flags: Callable[[argparse.ArgumentParser], None] = _no_flags
    flag_params: Callable[[argparse.Namespace], dict[str, Any]] = _no_params
    source: bool = True
    sampler: bool = True
    regenerate: Callable[[SamplingEngine, Mapping[str, Any], SamplerOptions], SongResult] | None = None
    command: (
        Callable[[SamplingEngine, argparse.Namespace, SamplerOptions, dict[str, Any]], Outputs] | None
    ) = None


_MODES: dict[str, SamplerMode] = {}


def register_mode(name: str, summary: str, **spec: Any) -> Callable[[ModeFn], ModeFn]:
    """Decorator: register the decorated function as mode ``name`` (``spec``: the other SamplerMode fields)."""

    def register(run: ModeFn) -> ModeFn:
        existing = _MODES.get(name)
        if existing is not None and existing.run is not run:
            raise ValueError(f"sampler mode {name!r} is registered twice ({existing.run} and {run})")
        _MODES[name] = SamplerMode(name, summary, run, **spec)
        return run

    return register


def get_mode(name: str) -> SamplerMode:
    if name not in _MODES:
        raise RefrainInputError(
            "mode",
            f"unknown sampler mode {name!r}",
            f"use one of {', '.join(_MODES)} (stem and accompany come with `import refrain.lora`)",
        )
    return _MODES[name]


def mode_names() -> tuple[str, ...]:
    return tuple(_MODES)


@dataclass(frozen=True)
class SourceSong:
    """A source song: (C, N) audio at the VAE rate, its sidecar identity and its (1, C, T) latent."""

    audio: Tensor
    identity: dict[str, Any]
    latent: Tensor

    @property
    def frames(self) -> int:
        return int(self.latent.shape[-1])


class ModeCall:
    """One call of a mode: settled options (a concrete seed) and layout, the encoded source song, and
    the steps every mode repeats (lyrics, guided velocity, seeded noise, the sidecar'd result)."""

    def __init__(
        self,
        engine: SamplingEngine,
        mode: str,
        options: SamplerOptions | None,
        layout: Layout,
        source: Source | None = None,
    ) -> None:
        self.engine, self.mode = engine, mode
        self.options = (options or SamplerOptions()).resolved()
        self.layout = LyricsLayout.from_any(layout)
        self.source: SourceSong | None = None
        if source is not None:
            audio, identity = engine.load_source(source)
            self.source = SourceSong(audio, identity, engine.encode(audio))

    @property
    def song(self) -> SourceSong:
        if self.source is None:
            raise RuntimeError(f"mode {self.mode} was called without a source song")
        return self.source

    @property
    def song_seconds(self) -> float:
        return self.song.audio.shape[-1] / self.engine.sample_rate

    @property
    def callback(self) -> Any:
        return self.engine.callback(self.mode, self.options.steps)

    def lyrics(self, text: str, seconds: float) -> TimedLyrics:
        return self.engine.timed_lyrics(text, seconds, self.layout)

    def guided(self, cond: DiTConditioning) -> GuidedVelocity:
        return self.options.guided(self.engine.model, cond)

    def velocity(self, prompt: str, timed: TimedLyrics, frames: int, **context: Tensor) -> GuidedVelocity:
        """The guided velocity under one song's conditioning (``context``: a repaint's kept frames)."""
        return self.guided(self.engine.conditioning(prompt, timed, frames, **context))

    def noise(self, frames: int) -> tuple[Tensor, torch.Generator]:
        """(1, C, frames) noise on the device from the options' seed, and the generator after it."""
        noise, generator = self.engine.noise(int(self.options.seed), frames)
        return noise.to(self.engine.device), generator

    def result(self, latent: Tensor, audio: Tensor, timed: TimedLyrics, **params: Any) -> SongResult:
        """The song with its sidecar: ``params`` plus the source's identity and the layout."""
        head = {"source": self.song.identity} if self.source is not None else {}
        full = {**head, **params, "layout": asdict(self.layout)}
        return self.engine.result(self.mode, full, self.options, latent, audio, timed)


def lyrics_flags(parser: argparse.ArgumentParser, prefix: str = "", prompt: bool = True) -> None:
    """--{prefix}prompt, --{prefix}lyrics and --{prefix}lyrics_file."""
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


def check_lyrics_flags(args: argparse.Namespace) -> None:
    """Every --X_lyrics given at most once: as text or as a file (checked before any file is opened)."""
    for name, file in vars(args).items():
        flag = name.removesuffix("_file")
        if name.endswith("lyrics_file") and file is not None and getattr(args, flag, None) is not None:
            raise RefrainInputError(
                f"--{flag}", "given both as text and as a file", f"pass --{flag} or --{flag}_file"
            )


def lyrics_from_flags(args: argparse.Namespace, prefix: str = "") -> str | None:
    """Lyrics from --X_lyrics or --X_lyrics_file (not both); None when neither was given."""
    from refrain.text.lrc import read_text_file

    check_lyrics_flags(args)
    file = getattr(args, f"{prefix}lyrics_file")
    return read_text_file(file) if file is not None else getattr(args, f"{prefix}lyrics")


def prompt_and_lyrics(args: argparse.Namespace) -> dict[str, Any]:
    """The ``prompt``/``lyrics`` params of a mode that uses ``lyrics_flags(parser)``."""
    return {"prompt": args.prompt, "lyrics": lyrics_from_flags(args) or ""}
