"""Random-crop audio dataset for the VAE: exact crop length, padding mask, MP3 input, skip-and-count."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from refrain.audio.mp3 import Mp3Degrader, Mp3Setting
from refrain.data.audio_dataset import AudioCropDataModule, AudioCropDataset, collate_crops
from refrain.data.options import LoaderOptions
from refrain.data.schema import FEATURES, empty_recaption

RATE = 44100
CROP = 8192


def write_wav(path: Path, seconds: float, rate: int = 48000, freq: float = 440.0) -> tuple[str, float]:
    t = np.arange(round(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, np.stack([mono, 0.5 * mono], axis=1).astype(np.float32), rate)
    return str(path), seconds


@pytest.fixture
def files(tmp_path: Path) -> dict[str, tuple[str, float]]:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    return {
        "long": write_wav(tmp_path / "long.wav", 1.0),
        "short": write_wav(tmp_path / "short.wav", 0.1),
        "corrupt": (str(corrupt), 1.0),
        "missing": (str(tmp_path / "gone.wav"), 1.0),
    }


def test_crop_is_exact_and_short_files_are_padded_with_a_mask(files) -> None:
    dataset = AudioCropDataset([files["long"], files["short"]], RATE, CROP)
    long_item, short_item = dataset[0], dataset[1]
    assert long_item["audio"].shape == (2, CROP) and long_item["mask"].sum() == CROP
    valid = round(0.1 * RATE)
    assert short_item["mask"].sum().item() == valid
    assert (
        short_item["audio"][:, valid:].abs().max() == 0 and short_item["audio"][:, :valid].abs().max() > 0.1
    )
    assert torch.equal(long_item["degraded"], long_item["audio"]) and long_item["setting"] == "clean"


def test_corrupt_and_missing_files_are_skipped_and_counted(files) -> None:
    dataset = AudioCropDataset([files["long"], files["corrupt"], files["missing"]], RATE, CROP)
    items = [dataset[i] for i in range(3)]
    assert items[0] is not None and items[1] is None and items[2] is None
    batch = collate_crops(items)
    assert batch["audio"].shape == (1, 2, CROP) and batch["skipped"] == 2
    empty = collate_crops([None, None])
    assert empty["audio"].numel() == 0 and empty["skipped"] == 2


def test_degrader_runs_on_the_crop(files) -> None:
    degrader = Mp3Degrader(RATE, cbr_bitrates=(64,), vbr_qualities=(), clean_probability=0.0)
    item = AudioCropDataset([files["long"]], RATE, CROP, degrader=degrader)[0]
    assert item["setting"] == "cbr64" and item["degraded"].shape == item["audio"].shape
    assert not torch.equal(item["degraded"], item["audio"])
    # aligned: the MP3 copy correlates strongly with the original at lag 0
    a, b = item["audio"][0].numpy(), item["degraded"][0].numpy()
    assert np.corrcoef(a, b)[0, 1] > 0.9


def test_draws_are_a_function_of_the_key(files) -> None:
    dataset = AudioCropDataset(
        [files["long"]], RATE, CROP, fixed_setting=Mp3Setting(bitrate_kbps=128), crops_per_item=2
    )
    first, again, other = dataset[0], dataset[0], dataset[1]
    assert torch.equal(first["audio"], again["audio"]) and torch.equal(first["degraded"], again["degraded"])
    assert first["setting"] == "cbr128" and not torch.equal(first["audio"], other["audio"])
    # a training key of a later epoch (epoch * len + index) is the same file with a fresh crop
    later = dataset[2 * len(dataset)]
    assert not torch.equal(later["audio"], first["audio"])
    assert torch.equal(later["audio"], dataset[2 * len(dataset)]["audio"])


def prepared(tmp_path: Path, train: list[tuple[str, float]], validation: list[tuple[str, float]]) -> Path:
    def record(name: str, duration: float, split: str) -> dict:
        return {
            "keys": Path(name).stem,
            "filename": name,
            "tags": [],
            "speaker_emb_path": "",
            "norm_lyrics": "",
            "recaption": empty_recaption(),
            "lrc": [],
            "lrc_source": "none",
            "phoneme_ids": [],
            "duration": duration,
            "sample_rate": 48000,
            "channels": 2,
            "language": "en",
            "content_hash": "x",
            "split": split,
        }

    splits = {
        "train": datasets.Dataset.from_list([record(n, d, "train") for n, d in train], features=FEATURES),
        "validation": datasets.Dataset.from_list(
            [record(n, d, "validation") for n, d in validation], features=FEATURES
        ),
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "prepared" / "hf"))
    return tmp_path / "prepared"


def test_datamodule_loads_a_prepared_dataset(tmp_path: Path, files) -> None:
    path = prepared(tmp_path, [files["long"], files["short"], files["corrupt"]], [files["long"]])
    module = AudioCropDataModule(
        str(path),
        RATE,
        crop_samples=CROP,
        batch_size=3,
        loader=LoaderOptions(num_workers=0),
        degrader=Mp3Degrader(RATE, clean_probability=0.5),
        val_bitrate_kbps=96,
    )
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["audio"].shape == (2, 2, CROP) and batch["skipped"] == 1
    val_a = next(iter(module.val_dataloader()))
    val_b = next(iter(module.val_dataloader()))
    assert val_a["setting"] == ["cbr96"] and torch.equal(val_a["degraded"], val_b["degraded"])
    # the train loader saves its place: a fresh loader given its state continues the same epoch
    loader = module.train_dataloader()
    loader.sampler.set_epoch(3)
    batches = list(loader)
    assert len(batches) == 1
    state = loader.state_dict()
    assert state["epoch"] == 3 and state["batches"] == 1
