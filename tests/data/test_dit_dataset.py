"""DiT batches: cache and online paths agree, crops move lyrics and teacher frames, bad items are counted."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from test_cache import SAMPLE_RATE, TinyEnv, build_tiny_env, make_dataset, song_record, write_dataset

from refrain.data.cache import cache_dir, entry_path
from refrain.data.cache_build import build_cache
from refrain.data.collate import collate_dit
from refrain.data.conditioning_encoder import ConditioningEncoder
from refrain.data.crops import Crop, choose_crop, crop_lyrics, record_sentences, teacher_span
from refrain.data.dit_dataset import DiTDataModule
from refrain.data.options import LoaderOptions, OnlineEncoding
from refrain.errors import RefrainInputError

FRAME_RATE = 100.0  # SAMPLE_RATE 8000 / hop 80


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory) -> TinyEnv:
    return build_tiny_env(tmp_path_factory.mktemp("tiny_env"))


@pytest.fixture(scope="module")
def encoder(tiny_env: TinyEnv) -> ConditioningEncoder:
    return ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers)


def datamodule(env: TinyEnv, dataset: Path, **kwargs: Any) -> DiTDataModule:
    online = OnlineEncoding(**{k: kwargs.pop(k) for k in ("use_cache", "fallback") if k in kwargs})
    loader = LoaderOptions(num_workers=kwargs.pop("num_workers", 0))
    args = {
        "batch_size": 2,
        "max_frames": 60,
        "seed": 3,
        "teachers": env.teachers,
        "online": online,
        "loader": loader,
    }
    args.update(kwargs)
    module = DiTDataModule(str(dataset), str(env.bundle), **args)
    module.setup("fit")
    return module


def assert_same_batch(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        elif isinstance(value, dict):
            assert value.keys() == b[key].keys(), key
            assert all(torch.equal(value[name], b[key][name]) for name in value), key
        else:
            assert value == b[key], key


def batches(loader: Any, seed: int = 0) -> list[dict[str, Any]]:
    torch.manual_seed(seed)  # the shuffle order
    return list(loader)


def test_cache_and_online_batches_are_identical(
    tmp_path: Path, tiny_env: TinyEnv, encoder: ConditioningEncoder
) -> None:
    dataset = make_dataset(tmp_path / "ds", count=4, validation=1)
    build_cache(dataset, encoder, progress=False)
    cached = datamodule(tiny_env, dataset)
    online = datamodule(tiny_env, dataset, use_cache=False)
    assert cached.fingerprint == encoder.fingerprint and cached.cached_records == 5
    for epoch in range(2):
        got = batches(cached.train_dataloader(), epoch)
        want = batches(online.train_dataloader(), epoch)
        assert len(got) == len(want) == 2
        for a, b in zip(got, want, strict=True):
            assert_same_batch(a, b)
    val_a, val_b = batches(cached.val_dataloader()), batches(online.val_dataloader())
    assert_same_batch(val_a[0], val_b[0])
    assert float(val_a[0]["crop_start"][0]) == 0.0
    # Random crops do move: over two epochs of 60-frame crops from 100-150-frame songs, some start late.
    starts = torch.cat([b["crop_start"] for b in batches(cached.train_dataloader(), 5)])
    assert starts.max() > 0.0 and cached.skipped_items("train") == online.skipped_items("train") == 0


def test_batch_matches_the_contract(tmp_path: Path, tiny_env: TinyEnv, encoder: ConditioningEncoder) -> None:
    dataset = make_dataset(tmp_path / "ds", count=2, validation=0)
    build_cache(dataset, encoder, progress=False)
    module = datamodule(tiny_env, dataset, max_frames=500)  # longer than every song: padding + mask
    (batch,) = batches(module.train_dataloader())
    lengths = sorted(batch["frame_mask"].sum(1).tolist())
    assert lengths == [100, 125] and batch["latent_mean"].shape == (2, 4, 125)
    assert (
        batch["latent_std"].shape == batch["latent_mean"].shape
        and batch["latent_mean"].dtype == torch.float32
    )
    short = int(batch["frame_mask"].sum(1).argmin())
    assert (batch["latent_mean"][short, :, 100:] == 0).all() and (
        batch["latent_std"][short, :, :100] > 0
    ).all()
    assert batch["frame_mask"].dtype == torch.bool and batch["lyrics"].dtype == torch.int64
    assert batch["lyrics"].shape == (2, 125) and (batch["lyrics"][short, 100:] == 0).all()
    assert batch["style"].dtype == torch.float32 and batch["style"].shape[::2] == (2, 384)
    assert batch["style_mask"].shape == batch["style"].shape[:2] and batch["style_mask"].any(1).all()
    assert set(batch["teacher_features"]) == set(batch["teacher_masks"]) == {"mert", "mhubert"}
    assert (
        batch["teacher_features"]["mert"].shape[2] == 32
        and batch["teacher_features"]["mhubert"].shape[2] == 16
    )
    for name, rate in (("mert", 75.0), ("mhubert", 50.0)):
        counts = batch["teacher_masks"][name].sum(1)
        assert all(
            abs(c - n / FRAME_RATE * rate) <= 2
            for c, n in zip(counts.tolist(), batch["frame_mask"].sum(1).tolist(), strict=True)
        )
    assert batch["crop_start"].dtype == torch.float32 and batch["crop_start"].tolist() == [0.0, 0.0]
    assert sorted(batch["keys"]) == ["song0", "song1"] and "speaker" not in batch
    assert all(text == "hello world\nsecond line\nthird" for text in batch["lyrics_text"])
    assert len(batch["prompts"]) == 2


def test_crop_shifts_and_drops_lyric_sentences() -> None:
    sentences = [(0.1, [5, 6, 2], "one"), (0.45, [8, 9, 2], "two"), (0.83, [10, 2], "three")]
    crop = Crop(start=30, frames=50, frame_rate=FRAME_RATE)  # 0.30 s .. 0.80 s
    grid, text = crop_lyrics(sentences, crop)
    assert grid.shape == (50,) and text == "two"
    first = math.floor((0.45 - 0.30) * FRAME_RATE)  # 15
    assert grid[first : first + 3].tolist() == [8, 9, 2] and int(grid.count_nonzero()) == 3
    whole, whole_text = crop_lyrics(sentences, Crop(0, 100, FRAME_RATE))
    assert (
        whole[10:13].tolist() == [5, 6, 2]
        and whole[83:85].tolist() == [10, 2]
        and whole_text == "one\ntwo\nthree"
    )
    assert choose_crop(80, 100, FRAME_RATE) == Crop(0, 80, FRAME_RATE)
    with pytest.raises(RefrainInputError):
        choose_crop(80, 0, FRAME_RATE)


def test_dataset_items_place_lyrics_and_teachers_under_the_crop(
    tmp_path: Path, tiny_env: TinyEnv, encoder: ConditioningEncoder
) -> None:
    dataset = make_dataset(tmp_path / "ds", count=1, validation=0)
    build_cache(dataset, encoder, progress=False)
    train = datamodule(tiny_env, dataset, max_frames=40).train_set
    record = train.records[0]
    whole = encoder.encode_record(record)
    seen_starts = set()
    for epoch in range(12):  # one record: key = epoch (ResumableSampler(epoch_keys=True))
        item = train[epoch]
        start = item["crop_start"]
        seen_starts.add(round(start * FRAME_RATE))
        for time, ids, _ in record_sentences(record):
            frame = math.floor((time - start) * FRAME_RATE + 1e-6)
            if time >= start and frame + len(ids) <= 40:
                assert item["lyrics"][frame : frame + len(ids)].tolist() == ids
        crop = Crop(round(start * FRAME_RATE), 40, FRAME_RATE)
        mean, _ = whole.latent(crop.start, crop.start + 40)
        assert torch.equal(item["latent_mean"], mean)
        for name in ("mert", "mhubert"):
            first, stop = teacher_span(crop, whole.teacher_frames(name), whole.meta.audio_seconds)
            assert torch.equal(item["teacher_features"][name], whole.teacher(name, first, stop))
            assert first == math.floor(start * whole.teacher_frames(name) / whole.meta.audio_seconds + 1e-6)
    assert len(seen_starts) > 3


def test_prompt_variants_drawn_differ_across_steps(tmp_path: Path, tiny_env: TinyEnv) -> None:
    dataset = make_dataset(tmp_path / "ds", count=1, validation=1)
    module = datamodule(tiny_env, dataset, teachers=None)
    variants = module.train_set.entry(module.train_set.records[0]).meta.prompts
    drawn = [module.train_set[epoch] for epoch in range(12)]  # one record: key = epoch
    prompts = [item["prompt"] for item in drawn]
    assert len(set(prompts)) >= 3 and set(prompts) <= set(variants)
    by_prompt = {item["prompt"]: item["style"] for item in drawn}
    first, second = list(by_prompt)[:2]
    assert not torch.equal(by_prompt[first][:3], by_prompt[second][:3])
    assert len({module.val_set[0]["prompt"] for _ in range(4)}) == 1  # validation is deterministic


def test_failed_items_are_skipped_and_counted(
    tmp_path: Path, tiny_env: TinyEnv, encoder: ConditioningEncoder
) -> None:
    folder = tmp_path / "ds"
    songs = [song_record(folder, i) for i in range(4)]
    dataset = write_dataset(folder, songs)
    build_cache(dataset, encoder, progress=False)
    folder_ = cache_dir(dataset, encoder.fingerprint)
    entry_path(folder_, songs[1]["content_hash"]).write_bytes(b"corrupt")  # a corrupt entry
    entry_path(folder_, songs[2]["content_hash"]).unlink()  # no entry, and its audio is gone
    os.remove(songs[2]["filename"])
    module = datamodule(tiny_env, dataset, batch_size=4)
    (batch,) = batches(module.train_dataloader())
    assert sorted(batch["keys"]) == ["song0", "song3"] and batch["latent_mean"].shape[0] == 2
    assert module.skipped_items("train") == 2
    batches(module.train_dataloader())
    assert module.skipped_items("train", reset=True) == 4 and module.skipped_items("train") == 0
    empty = collate_dit([None, None])
    assert empty["latent_mean"].shape[0] == 0 and empty["keys"] == []
    strict = datamodule(tiny_env, dataset, batch_size=4, fallback=False)
    batches(strict.train_dataloader())
    assert strict.skipped_items("train") == 2


def test_online_encoder_is_built_once_per_process(
    tmp_path: Path, tiny_env: TinyEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = make_dataset(tmp_path / "ds", count=2, validation=0)
    module = datamodule(tiny_env, dataset, use_cache=False, teachers=None)
    built: list[int] = []
    factory = module.train_set.encoder_factory

    def counting() -> ConditioningEncoder:
        built.append(os.getpid())
        return factory()

    monkeypatch.setattr(module.train_set, "encoder_factory", counting)
    for _ in range(2):
        batches(module.train_dataloader())
    assert built == [os.getpid()]


def test_speaker_embeddings_load_or_zero(tmp_path: Path, tiny_env: TinyEnv) -> None:
    folder = tmp_path / "ds"
    folder.mkdir(parents=True)
    torch.save(torch.tensor([1.0, 2.0, 3.0]), folder / "spk.pt")  # relative paths start at the dataset
    songs = [song_record(folder, 0, speaker_emb_path="spk.pt"), song_record(folder, 1)]
    module = datamodule(tiny_env, write_dataset(folder, songs), teachers=None, speaker_dim=3, batch_size=2)
    (batch,) = batches(module.train_dataloader())
    rows = dict(zip(batch["keys"], batch["speaker"].tolist(), strict=True))
    assert rows == {"song0": [1.0, 2.0, 3.0], "song1": [0.0, 0.0, 0.0]}
    wrong = datamodule(tiny_env, folder, teachers=None, speaker_dim=4, batch_size=2)
    (batch,) = batches(wrong.train_dataloader())
    assert batch["keys"] == ["song1"] and wrong.skipped_items() == 1


@pytest.mark.slow
def test_workers_build_the_online_encoder_once_each(tmp_path: Path, tiny_env: TinyEnv) -> None:
    dataset = make_dataset(tmp_path / "ds", count=4, validation=0)
    log = tmp_path / "built.txt"
    module = datamodule(tiny_env, dataset, use_cache=False, teachers=None, num_workers=2, batch_size=1)
    module.train_set.encoder_factory = _LoggingFactory(module.train_set.encoder_factory, log)
    loader = module.train_dataloader()  # Lightning asks once per fit; its workers persist across epochs
    for _ in range(2):
        assert len(batches(loader)) == 4
    pids = log.read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 2 and str(os.getpid()) not in pids


class _LoggingFactory:
    """Picklable factory that notes the process building each encoder."""

    def __init__(self, factory: Any, log: Path) -> None:
        self.factory, self.log = factory, log

    def __call__(self) -> ConditioningEncoder:
        with self.log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        return self.factory()


def test_bad_config_is_a_one_line_error(tmp_path: Path, tiny_env: TinyEnv) -> None:
    with pytest.raises(RefrainInputError, match="dataset_path: not set"):
        DiTDataModule("", str(tiny_env.bundle))
    with pytest.raises(RefrainInputError, match="use_cache"):
        DiTDataModule(
            str(tmp_path), str(tiny_env.bundle), online=OnlineEncoding(use_cache=False, fallback=False)
        )
    assert SAMPLE_RATE / 80 == FRAME_RATE


def test_online_fallback_writes_the_entry_back_once(
    tmp_path: Path, tiny_env: TinyEnv, encoder: ConditioningEncoder
) -> None:
    """A record missing from the cache is encoded once; the next epoch reads the entry it wrote."""
    dataset = make_dataset(tmp_path / "ds", count=2, validation=0)
    module = datamodule(tiny_env, dataset)
    assert module.cached_records == 0
    first = batches(module.train_dataloader())
    assert len(list(module.cache_folder.glob("*.safetensors"))) == 2
    reference = datamodule(tiny_env, dataset, use_cache=False)
    for a, b in zip(first, batches(reference.train_dataloader()), strict=True):
        assert_same_batch(a, b)
    rebuilt = datamodule(tiny_env, dataset)
    assert rebuilt.cached_records == 2
