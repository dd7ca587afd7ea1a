"""What the pipeline takes and gives: a song request (one line of a prompts file) and a result."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.sidecar import sidecar_path, write_sidecar

AUDIO_SUFFIXES = (".flac", ".wav")


@dataclass(frozen=True)
class LyricsLayout:
    """How lyrics without timestamps are laid out (``bpm``, ``lyrics_start``) and read (``language``,
    ``lyrics_format``: auto, lrc or structured). LRC lyrics keep their own times."""

    bpm: float = 100.0
    language: str | None = None
    lyrics_format: str = "auto"
    lyrics_start: float = 0.0

    def __post_init__(self) -> None:
        if not self.bpm > 0:
            raise RefrainInputError(
                "bpm", f"{self.bpm} is not a positive tempo", "pass beats per minute, e.g. 100"
            )

    @classmethod
    def from_any(cls, value: LyricsLayout | Mapping[str, Any] | None) -> LyricsLayout:
        if value is None or isinstance(value, LyricsLayout):
            return value or cls()
        return cls(**_known(cls, value, "lyrics layout"))


@dataclass(frozen=True)
class SongRequest:
    """One text2music song; ``seed`` None means ``options.seed`` plus the song's index in its batch."""

    prompt: str = ""
    lyrics: str = ""
    duration: float = 30.0
    bpm: float = 100.0
    language: str | None = None
    lyrics_format: str = "auto"
    lyrics_start: float = 0.0
    seed: int | None = None
    timbre_audio: str | None = None  # a reference audio file for the timbre (backbones with a timbre input)

    @property
    def layout(self) -> LyricsLayout:
        return LyricsLayout(self.bpm, self.language, self.lyrics_format, self.lyrics_start)

    @classmethod
    def from_any(cls, value: SongRequest | Mapping[str, Any]) -> SongRequest:
        return value if isinstance(value, SongRequest) else cls(**_known(cls, value, "song request"))


def _known(cls: type, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RefrainInputError(
            what, f"unknown key(s) {', '.join(unknown)}", f"use only {', '.join(sorted(names))}"
        )
    return dict(values)


@dataclass
class SongResult:
    """A generated song: float32 (channels, samples) audio, its latent (C, T) and its sidecar."""

    audio: np.ndarray
    sample_rate: int
    sidecar: dict[str, Any]
    latent: Tensor = field(repr=False)

    @property
    def duration(self) -> float:
        return self.audio.shape[-1] / self.sample_rate

    def save(self, path: str | Path, spectrogram: bool = False) -> Path:
        """Write the audio (FLAC or WAV by suffix), the sidecar beside it and optionally a spectrogram PNG."""
        from refrain.audio.io import save_audio

        path = Path(path)
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            raise RefrainInputError(
                path, f"cannot write {path.suffix!r} songs", "name the output .flac or .wav"
            )
        save_audio(path, self.audio, self.sample_rate)
        self.sidecar["output"] = {"path": str(path.resolve()), "format": path.suffix.lower().lstrip(".")}
        write_sidecar(sidecar_path(path), self.sidecar)
        if spectrogram:
            from refrain.audio.spectrogram import save_spectrogram_png

            title = f"{self.sidecar.get('mode', 'song')}: {json.dumps(self.sidecar.get('params', {}).get('prompt', ''))}"
            save_spectrogram_png(path.with_suffix(".png"), [(title, self.audio)], self.sample_rate)
        return path
