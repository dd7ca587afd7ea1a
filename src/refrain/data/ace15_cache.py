"""Fill ACE-Step 1.5's frozen text cache before training (``refrain-encode --ace15 RELEASE``).

An ACE-Step 1.5 run conditions each crop on the Qwen3 states of its SFT prompt (prompt variant, crop
duration, task instruction) and on the token ids of its lyric prompt (the lyric lines inside the crop).
Training caches both the first time it meets them (``TextSide``); this module computes every one a run
can meet, so training runs no Qwen3 forward at all:

- per record, each prompt variant its cache entry stores, for the crop length ``max_frames`` gives it
  (``choose_crop``: min(song frames, max_frames)), with the text2music instruction and, on a multitrack
  dataset, the instruction of the reference task its role trains (``stem:<i>``: lego, ``rest:<i>``:
  complete; see ``refrain.models.backbones.ace15_tasks``);
- per record, the lyric text of every crop start (the lines inside [start, start + length), found by
  ``crop_lyrics`` itself for one start of each distinct window).

The same ``TextSide`` methods write the files that the online path writes, so the values are identical by
construction (tests compare them); a crop this misses (another ``data.max_frames``) is filled online.

With ``timbre`` (``--ace15_timbre``) it also stores every record's timbre reference for
``model.dit.timbre=song`` (``refrain.models.backbones.ace15_timbre.TimbreSide``: one VAE forward over the
pipeline's 30 s selection of the song, the same call the online fallback makes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refrain.data.cache import entry_path, open_entry
from refrain.data.crops import Crop, choose_crop, crop_lyrics, record_sentences
from refrain.data.multitrack import read_layout
from refrain.errors import RefrainInputError

log = logging.getLogger(__name__)


@dataclass
class PrefillReport:
    """What one pre-fill did (new = files written now; the rest were there already)."""

    folder: Path
    records: int = 0
    missing: int = 0  # records without a conditioning cache entry (their length is unknown): left online
    prompts: int = 0
    new_prompts: int = 0
    lyrics: int = 0
    new_lyrics: int = 0
    timbres: int = 0
    new_timbres: int = 0
    timbre_folder: Path | None = None  # where the timbre references went (``--ace15_timbre``)

    def summary(self) -> str:
        return (
            f"ACE-Step 1.5 text cache {self.folder}: {self.records} records, {self.prompts} SFT prompts "
            f"({self.new_prompts} encoded now), {self.lyrics} lyric prompts ({self.new_lyrics} new)"
            + (
                f"; timbre references {self.timbre_folder}: {self.timbres} ({self.new_timbres} new)"
                if self.timbres
                else ""
            )
            + (
                f"; {self.missing} records without a cache entry left to the online path"
                if self.missing
                else ""
            )
        )


def lyric_windows(record: Mapping[str, Any], total: int, frames: int, frame_rate: float) -> list[str]:
    """Every distinct lyric text a crop of ``frames`` of this song can carry (any start, as training draws)."""
    sentences = record_sentences(record)
    times = np.sort(np.array([s[0] for s in sentences], dtype=np.float64))
    starts = np.arange(total - frames + 1)
    first = np.searchsorted(times, starts / frame_rate, side="left")
    stop = np.searchsorted(times, (starts + frames) / frame_rate, side="left")
    _, index = np.unique(np.stack([first, stop], axis=1), axis=0, return_index=True)
    texts = [crop_lyrics(sentences, Crop(int(starts[i]), frames, frame_rate))[1] for i in sorted(index)]
    return list(dict.fromkeys(texts))


def record_tasks(key: str, roles: Mapping[str, tuple[str, str]]) -> list[str]:
    """The SFT-prompt tasks a record trains: text2music, plus its multitrack role's reference task."""
    from refrain.models.backbones.ace15_tasks import reference_instruction

    tasks = ["text2music"]
    family, _, instrument = roles.get(key, ("", ""))[1].partition(":")
    if family in ("stem", "rest") and instrument:
        tasks.append(reference_instruction(family, instrument))
    return tasks


def _records(dataset_path: Path, splits: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    from refrain.data.schema import load_prepared

    prepared = load_prepared(dataset_path)
    for split in splits:
        if split not in prepared:
            raise RefrainInputError(
                "--split", f"{split!r} is not a split of {dataset_path}", "use train,validation"
            )
        yield from prepared[split]


def prefill_ace15(
    dataset_path: str | Path,
    release: str | Path,
    cache_folder: str | Path,
    fingerprint: str,
    splits: Sequence[str] = ("train", "validation"),
    max_frames: int = 2048,
    frame_rate: float = 25.0,
    timbre: bool = False,
) -> PrefillReport:
    """Encode every SFT prompt and lyric prompt training can meet into the dataset's ACE-Step 1.5 text cache.

    ``cache_folder``/``fingerprint``: the conditioning cache refrain-encode just wrote (its entries give each
    record's length and prompt variants). ``timbre``: also each record's timbre reference (``timbre=song``).
    """
    from refrain.models.backbones.ace15 import check_release_folder
    from refrain.models.backbones.ace15_tasks import crop_seconds
    from refrain.models.backbones.ace15_text import (
        SongMeta,
        TextSide,
        lyric_prompt,
        sft_prompt,
        text_cache_dir,
    )
    from refrain.models.backbones.ace15_timbre import timbre_side

    side = TextSide(check_release_folder(release), cache_dir=text_cache_dir(dataset_path))
    timbres = timbre_side("song" if timbre else "silence", release, dataset_path)
    report = PrefillReport(text_cache_dir(dataset_path))
    report.timbre_folder = timbres.cache_dir if timbres is not None else None
    layout = read_layout(dataset_path)
    roles = layout.roles_by_key() if layout is not None else {}
    for record in _records(Path(dataset_path), splits):
        digest = str(record["content_hash"])
        if timbres is not None:  # the song's audio only: no cache entry needed
            report.new_timbres += _fill_timbre(timbres, digest, str(record.get("filename") or ""))
            report.timbres += 1
        path = entry_path(cache_folder, digest)
        if not path.exists():
            report.missing += 1
            continue
        entry = open_entry(path, digest, fingerprint)
        crop = choose_crop(entry.num_frames, max_frames, frame_rate)
        seconds = crop_seconds(torch.ones(1, crop.frames, dtype=torch.bool), frame_rate)[0]
        report.records += 1
        for task in record_tasks(str(record.get("keys") or ""), roles):
            for caption in entry.meta.prompts:
                report.new_prompts += _fill(side, "prompt", sft_prompt(caption, SongMeta(seconds, task=task)))
                report.prompts += 1
        for text in lyric_windows(record, entry.num_frames, crop.frames, frame_rate):
            report.new_lyrics += _fill(side, "lyrics", lyric_prompt(text, SongMeta().language))
            report.lyrics += 1
    log.info(report.summary())
    return report


def _fill_timbre(side: Any, digest: str, filename: str) -> int:
    """1 when the song's timbre reference was computed now, 0 when its file was there already."""
    path = side.cache_file(digest)
    if path is not None and path.is_file():
        return 0
    side.song(digest, filename, torch.device("cpu"))
    return 1


def _fill(side: Any, kind: str, text: str) -> int:
    """1 when the file was written now, 0 when it was there already."""
    path = side.cache_file(kind, text)
    if path is not None and path.is_file():
        return 0
    if kind == "prompt":
        side.prompt_states(text, torch.device("cpu"))
    else:
        side.lyric_ids(text, torch.device("cpu"))
    return 1
