"""Bad items during training are named once, quarantined, and cost only themselves, not their batch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_cache import TinyEnv, build_tiny_env, song_record, write_dataset
from torch.utils.data import DataLoader

import refrain.data.audio_dataset as audio_dataset
import refrain.data.dit_dataset as dit_dataset
from refrain.data.audio_dataset import AudioCropDataset, collate_crops
from refrain.data.cache import FileEntry, TensorEntry, cache_dir, entry_path, open_entry, write_entry
from refrain.data.cache_build import build_cache
from refrain.data.conditioning_encoder import ConditioningEncoder
from refrain.data.dit_dataset import DiTDataModule
from refrain.data.options import LoaderOptions
from refrain.errors import RefrainInputError

RATE = 48_000
CROP = 4096


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory) -> TinyEnv:
    return build_tiny_env(tmp_path_factory.mktemp("tiny_env"))


def _messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


def _poison(path: Path) -> None:
    """Rewrite a cache entry with NaN in one latent channel (a valid checksum: only the values are bad)."""
    entry = FileEntry(path)
    tensors = entry.load_all()
    tensors["latent_mean"] = tensors["latent_mean"].clone()
    tensors["latent_mean"][0, :] = float("nan")
    write_entry(path, TensorEntry(tensors, entry.meta))


def test_a_nan_cache_entry_is_named_once_and_the_rest_of_its_batch_trains(
    tmp_path: Path, tiny_env: TinyEnv, monkeypatch, caplog
) -> None:
    encoder = ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers)
    folder = tmp_path / "ds"
    songs = [song_record(folder, i) for i in range(4)]
    dataset = write_dataset(folder, songs)
    build_cache(dataset, encoder, progress=False)
    bad = entry_path(cache_dir(dataset, encoder.fingerprint), songs[1]["content_hash"])
    _poison(bad)
    module = DiTDataModule(
        str(dataset),
        str(tiny_env.bundle),
        teachers=tiny_env.teachers,
        batch_size=4,
        max_frames=60,
        seed=3,
        loader=LoaderOptions(num_workers=0),
    )
    module.setup("fit")
    opened: list[str] = []
    real_open = dit_dataset.open_entry
    monkeypatch.setattr(
        dit_dataset, "open_entry", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k)
    )
    with caplog.at_level(logging.WARNING, logger="refrain.data.quarantine"):
        for _ in range(3):  # three epochs
            (batch,) = list(module.train_dataloader())
            assert sorted(batch["keys"]) == ["song0", "song2", "song3"]  # was: a NaN loss for all four
            assert bool(torch.isfinite(batch["latent_mean"]).all())
    named = _messages(caplog, "song1")
    assert len(named) == 1 and "NaN/inf values in latent_mean" in named[0] and str(bad) in named[0]
    assert opened.count(str(bad)) == 1  # quarantined: never read again
    assert module.quarantined("train") == [f"song1 ({songs[1]['filename']})"]
    assert module.skipped_items("train") == 3
    with pytest.raises(RefrainInputError, match="NaN/inf values in latent_mean"):
        open_entry(bad, verify=True)
    assert build_cache(dataset, encoder, progress=False, verify=True).redone == 1  # refrain-encode --verify
    open_entry(bad, verify=True)


def _wav(path: Path, samples: np.ndarray) -> tuple[str, float]:
    sf.write(path, samples, RATE, subtype="FLOAT")
    return str(path), samples.shape[0] / RATE


def test_repairs_while_loading_name_the_file_once_and_keep_the_crop(tmp_path: Path, caplog) -> None:
    samples = np.full((CROP, 2), 0.2, dtype=np.float32)
    samples[10, 0], samples[20, 1] = np.nan, 1.5
    item = _wav(tmp_path / "glitchy.wav", samples)
    dataset = AudioCropDataset([item], RATE, CROP)
    with caplog.at_level(logging.WARNING, logger="refrain.data.quarantine"):
        crops = [dataset[key] for key in range(3)]
    assert all(c is not None and bool(torch.isfinite(c["audio"]).all()) for c in crops)
    named = _messages(caplog, "glitchy.wav")
    assert len(named) == 1 and "1 NaN/inf samples zeroed, 1 clipped" in named[0]
    assert dataset.quarantined_files() == []


def test_a_file_that_fails_is_quarantined_across_workers(tmp_path: Path, monkeypatch) -> None:
    good = _wav(tmp_path / "good.wav", np.full((CROP, 2), 0.2, dtype=np.float32))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF" + bytes(100))
    dataset = AudioCropDataset([good, (str(broken), 1.0)] * 2, RATE, CROP)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_crops)
    (batch,) = list(loader)
    assert batch["audio"].shape[0] == 2 and batch["skipped"] == 2
    assert dataset.quarantined_files() == [str(broken)]  # a worker flagged it; the main process sees it
    calls: list[str] = []
    real = audio_dataset.load_audio
    monkeypatch.setattr(audio_dataset, "load_audio", lambda f, *a: calls.append(f) or real(f, *a))
    assert dataset[1] is None and calls == []  # skipped without decoding it again


def test_encoding_a_song_that_needed_repairs_names_it(tmp_path: Path, caplog) -> None:
    from refrain.data.conditioning_encoder import load_record_audio

    samples = np.full((CROP, 2), 0.2, dtype=np.float32)
    samples[5, 1] = np.inf
    filename, _ = _wav(tmp_path / "inf.wav", samples)
    with caplog.at_level(logging.WARNING, logger="refrain.data.conditioning_encoder"):
        audio = load_record_audio({"filename": filename}, RATE, 2)
    assert bool(torch.isfinite(audio).all())
    assert _messages(caplog, "inf.wav") == [
        f"{filename}: 1 NaN/inf samples zeroed and 0 samples beyond full scale clipped before encoding"
    ]
