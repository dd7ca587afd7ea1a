"""Song-set evaluation: FAD per embedding model, CLAP text-audio score, lyric WER/PER and music statistics.

A song set is a folder of audio files (``refrain-infer`` output, with its JSON sidecars giving each song's
prompt and lyrics) or a prepared dataset (its records' audio, tags and lyrics). Every figure is computed
per song and summarised per set, and FAD compares the generated set with the reference set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refrain.audio.io import load_audio
from refrain.data.sources import AUDIO_EXTENSIONS
from refrain.errors import RefrainInputError
from refrain.eval.embedders import ClapEmbedder
from refrain.eval.embedding_cache import EmbeddingCache
from refrain.eval.frechet import GaussianStats, frechet_distance
from refrain.eval.song_stats import song_statistics
from refrain.eval.text_metrics import phoneme_error_rate, word_error_rate

STATS_RATE = 44100


@dataclass
class Song:
    """One song of a set: its audio file and, when known, its prompt and lyrics."""

    path: Path
    prompt: str = ""
    lyrics: str = ""


@dataclass
class SongSet:
    name: str
    songs: list[Song] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [song.path for song in self.songs]


def _sidecar_text(audio: Path) -> tuple[str, str]:
    """(prompt, lyrics) from a refrain-infer sidecar beside ``audio``, '' where absent."""
    sidecar = audio.with_suffix(".json")
    if not sidecar.is_file():
        return "", ""
    try:
        params = json.loads(sidecar.read_text(encoding="utf-8")).get("params") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return "", ""
    return str(params.get("prompt") or ""), str(params.get("lyrics") or "")


def read_prompts_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """A ``refrain-infer --prompts_file`` file keyed by song name (the output file's stem)."""
    from refrain.sampling.prompts_file import read_prompts

    return dict(read_prompts(Path(path), 0))


def folder_set(
    folder: str | Path, prompts: dict[str, dict[str, Any]] | None = None, name: str = ""
) -> SongSet:
    """Every audio file in ``folder`` (sorted); prompt/lyrics from the prompts file, else the sidecar."""
    root = Path(folder)
    if not root.is_dir():
        raise RefrainInputError(root, "is not a folder", "pass the folder refrain-infer wrote its songs into")
    songs = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS):
        request = (prompts or {}).get(path.stem)
        prompt, lyrics = (
            (str(request.get("prompt", "")), str(request.get("lyrics", "")))
            if request
            else _sidecar_text(path)
        )
        songs.append(Song(path, prompt, lyrics))
    if not songs:
        raise RefrainInputError(
            root, "holds no audio files", f"put songs ({', '.join(AUDIO_EXTENSIONS)}) there"
        )
    return SongSet(name or root.name, songs)


def dataset_set(dataset_path: str | Path, split: str | None = None) -> SongSet:
    """A prepared dataset's songs (both splits unless ``split``), with their tags as prompt and lyrics."""
    from refrain.data.schema import load_prepared

    dataset = load_prepared(dataset_path)
    songs = []
    for name in [split] if split else list(dataset):
        for record in dataset[name]:
            songs.append(
                Song(Path(record["filename"]), ", ".join(record["tags"]), record["norm_lyrics"] or "")
            )
    return SongSet(Path(dataset_path).name, songs)


def song_set(location: str | Path, prompts: dict[str, dict[str, Any]] | None = None) -> SongSet:
    """A prepared dataset if ``location`` holds one, else a folder of audio files."""
    from refrain.data.schema import HF_DIR

    return dataset_set(location) if (Path(location) / HF_DIR).is_dir() else folder_set(location, prompts)


def load_mono(path: Path, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    return load_audio(path, sample_rate, 1, 0.0, max_seconds).samples[0]


def embed_set(embedder: Any, songs: SongSet, cache: EmbeddingCache, max_seconds: float | None) -> np.ndarray:
    """(N, D) audio embeddings of a set, cached per file content and model fingerprint."""

    def compute(paths: list[Path]) -> np.ndarray:
        return np.concatenate(
            [embedder.embed_audio(load_mono(p, embedder.sample_rate, max_seconds)[None]) for p in paths]
        )

    return cache.get(songs.paths, f"{embedder.fingerprint}:{max_seconds}", compute)


@dataclass
class SongsEvaluator:
    """The configured models; ``evaluate(generated, reference)`` gives rows for eval.json."""

    embedders: Sequence[Any]
    clap: ClapEmbedder | None = None
    asr: Any | None = None
    cache: EmbeddingCache = field(default_factory=EmbeddingCache)
    max_seconds: float | None = 30.0
    language: str | None = None
    progress: Callable[[str], None] | None = None

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def fad(self, generated: SongSet, reference: SongSet) -> dict[str, float]:
        """FAD of generated against reference, per embedding model."""
        out = {}
        for embedder in self.embedders:
            self._say(f"embedding with {embedder.name}")
            gen = GaussianStats.of(embed_set(embedder, generated, self.cache, self.max_seconds), "generated")
            ref = GaussianStats.of(embed_set(embedder, reference, self.cache, self.max_seconds), "reference")
            out[f"fad_{embedder.name}"] = frechet_distance(gen, ref)
        return out

    def per_song(self, songs: SongSet) -> list[dict[str, Any]]:
        """Statistics, CLAP score (cosine of song and prompt) and lyric error rates of every song."""
        from refrain.text.g2p import G2P

        g2p = G2P() if self.asr is not None else None
        clap_audio = embed_set(self.clap, songs, self.cache, self.max_seconds) if self.clap else None
        clap_text = self.clap.embed_text([s.prompt for s in songs.songs]) if self.clap else None
        rows = []
        for index, song in enumerate(songs.songs):
            self._say(f"{songs.name}: {song.path.name}")
            row: dict[str, Any] = {"set": songs.name, "song": song.path.name}
            row.update(
                song_statistics(
                    load_audio(song.path, STATS_RATE, 2, 0.0, self.max_seconds).samples, STATS_RATE
                )
            )
            if clap_audio is not None and song.prompt:
                row["clap"] = float(clap_audio[index] @ clap_text[index])
            if self.asr is not None and song.lyrics.strip():
                text = self.asr.transcribe(
                    load_mono(song.path, self.asr.sample_rate, self.max_seconds), self.asr.sample_rate
                )
                row["transcript"] = text
                row["wer"] = word_error_rate(song.lyrics, text)
                row["per"] = phoneme_error_rate(song.lyrics, text, g2p, self.language)
            rows.append(row)
        return rows


def summarise(rows: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    """Means of every numeric per-song figure of one set (NaN-free), with the song count."""
    summary: dict[str, Any] = {"set": name, "songs": len(rows)}
    keys = dict.fromkeys(k for row in rows for k, v in row.items() if isinstance(v, float))
    for key in keys:
        values = [row[key] for row in rows if isinstance(row.get(key), float) and np.isfinite(row[key])]
        summary[key] = float(np.mean(values)) if values else float("nan")
    return summary
