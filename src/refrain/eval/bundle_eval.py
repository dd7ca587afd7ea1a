"""Evaluate a DiT bundle (and LoRA adapters on it) by generating a prompts file with fixed seeds.

Generation goes through ``refrain-infer text2music --prompts_file`` (``refrain.cli.eval.generate``), the
very command a user runs, so the songs measured are the songs a user gets (with their sidecars). With adapters, the base and the adapted
bundle sing the same prompts from the same seeds, and the report puts the two rows side by side: how far
the adapter moved the songs toward its training set (FAD before/after), and whether they still follow
their prompts (CLAP score before/after), overall and per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from refrain.errors import RefrainInputError
from refrain.eval.songs_eval import SongSet, SongsEvaluator, embed_set, summarise


def _recorded_dataset(adapter: Path) -> str | None:
    """``dataset_path`` as an adapter's refrain_lora.json records it (top level or under its base)."""
    import json

    from refrain.lora.adapters import BASE_KEY
    from refrain.lora.config import SPEC_FILE

    try:
        described = json.loads((adapter / SPEC_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return described.get("dataset_path") or (described.get(BASE_KEY) or {}).get("dataset_path")


def training_dataset(bundle: str | Path, loras: Sequence[str]) -> str:
    """The dataset the last adapter (else the bundle) was trained on, from its recorded config."""
    from refrain.lora.adapters import AdapterRef

    candidates = [_recorded_dataset(Path(AdapterRef.parse(text).path)) for text in reversed(list(loras))]
    config_file = Path(bundle) / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    candidates.append((config or {}).get("dataset_path"))
    for dataset in candidates:
        if dataset and Path(dataset).is_dir():
            return str(dataset)
    raise RefrainInputError(bundle, "records no training dataset that exists here", "pass --dataset_path")


def centroid_distances(
    evaluator: SongsEvaluator, songs: SongSet, reference: SongSet
) -> dict[str, list[float]]:
    """Per song and embedding model: Euclidean distance of its embedding to the reference set's mean."""
    out = {}
    for embedder in evaluator.embedders:
        ref = embed_set(embedder, reference, evaluator.cache, evaluator.max_seconds).mean(axis=0)
        gen = embed_set(embedder, songs, evaluator.cache, evaluator.max_seconds)
        out[f"dist_{embedder.name}"] = [float(d) for d in np.linalg.norm(gen - ref, axis=1)]
    return out


def evaluate_sets(
    evaluator: SongsEvaluator, sets: Sequence[SongSet], reference: SongSet
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Overall rows (one per set: means + FAD) and per-prompt rows (per song: CLAP, distances)."""
    rows, per_prompt = [], {}
    for songs in sets:
        per_song = evaluator.per_song(songs)
        fad = evaluator.fad(songs, reference) if evaluator.embedders else {}
        rows.append({**summarise(per_song, songs.name), **fad})
        distances = centroid_distances(evaluator, songs, reference)
        per_prompt[songs.name] = [
            {
                "set": songs.name,
                "prompt": song.path.stem,
                **{k: v for k, v in row.items() if k in ("clap", "wer", "per")},
                **{name: values[i] for name, values in distances.items()},
            }
            for i, (song, row) in enumerate(zip(songs.songs, per_song, strict=True))
        ]
    return rows, per_prompt
