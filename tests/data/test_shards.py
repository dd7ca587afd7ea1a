"""The sharded cache: Arrow rows hold the per-song entries byte for byte; the stream splits, orders and resumes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_cache import TinyEnv, build_tiny_env, make_dataset
from test_dit_dataset import assert_same_batch

from refrain.data.cache import FileEntry, TensorEntry, cache_dir, write_entry
from refrain.data.cache_build import build_cache
from refrain.data.conditioning_encoder import ConditioningEncoder
from refrain.data.dit_dataset import DiTDataModule
from refrain.data.options import LoaderOptions
from refrain.data.shard_stream import ShardLoader, ShardStream
from refrain.data.shards import ShardedCache, entry_from_bytes, shard_files, shards_dir, write_shards
from refrain.errors import RefrainInputError

SONGS = 7  # 6 train + 1 validation


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory) -> TinyEnv:
    return build_tiny_env(tmp_path_factory.mktemp("tiny_env"))


@pytest.fixture(scope="module")
def encoded(tiny_env: TinyEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, cache folder): 6 + 1 songs encoded per song, then written as 3 shards."""
    encoder = ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers)
    dataset = make_dataset(tmp_path_factory.mktemp("shards") / "ds", count=SONGS - 1, validation=1)
    report = build_cache(dataset, encoder, progress=False)
    write_shards(report.cache_dir, 3)
    return dataset, report.cache_dir


def sharded(env: TinyEnv, dataset: Path, cache_format: str = "shards", **kwargs: Any) -> DiTDataModule:
    """The tests' DiT data module (test_dit_dataset's settings) reading ``cache_format``, no workers."""
    loader = LoaderOptions(num_workers=0, cache_format=cache_format)
    args = {
        "batch_size": 2,
        "max_frames": 60,
        "seed": 3,
        "teachers": env.teachers,
        "loader": loader,
        **kwargs,
    }
    module = DiTDataModule(str(dataset), str(env.bundle), **args)
    module.setup("fit")
    return module


def stream_of(module: Any, rank: int = 0, world_size: int = 1, **kwargs: Any) -> ShardStream:
    args = {"buffer_size": 4, "num_shards": 3, **kwargs}
    return ShardStream(
        module.train_set, module.batch_size, module.seed, rank=rank, world_size=world_size, **args
    )


def test_rows_are_the_per_song_entries_byte_for_byte(encoded: tuple[Path, Path]) -> None:
    _, folder = encoded
    files = shard_files(shards_dir(folder))
    assert len(files) == 3 and all(path.suffix == ".arrow" for path in files)
    shards = ShardedCache(shards_dir(folder))
    entries = sorted(folder.glob("*.safetensors"))
    assert len(shards) == len(entries) == SONGS
    for path in entries:
        on_disk = FileEntry(path)
        row = shards.table()[shards.rows[on_disk.meta.content_hash]]
        assert row["entry"] == path.read_bytes()
        assert row["frames"] == on_disk.num_frames and row["key"] == on_disk.meta.key
        tensors = entry_from_bytes(row["entry"], "row").tensors
        expected = on_disk.load_all()
        assert tensors.keys() == expected.keys()
        assert all(torch.equal(tensors[k], expected[k]) for k in tensors)


def test_ranks_take_disjoint_equal_parts_in_a_seeded_order(
    tiny_env: TinyEnv, encoded: tuple[Path, Path]
) -> None:
    module = sharded(tiny_env, encoded[0], batch_size=1)
    for blocks in (3, 4):  # 4 blocks of 2, 2, 1, 1 records: whole blocks per rank would be unequal
        ranks = [stream_of(module, rank, 2, num_shards=blocks) for rank in (0, 1)]
        for epoch in range(6):  # with whole blocks per rank, epoch 5 splits 4 + 2 (datasets 5.2.0)
            parts = [stream.order(epoch) for stream in ranks]
            assert len(parts[0]) == len(parts[1]) == 3 and not set(parts[0]) & set(parts[1])
            assert parts[0] == stream_of(module, 0, 2, num_shards=blocks).order(epoch)  # (seed, epoch, rank)
    assert sorted(ranks[0].order(0) + ranks[1].order(0)) == list(range(SONGS - 1))
    orders = {tuple(stream_of(module, 0, 1).order(epoch)) for epoch in range(4)}
    assert len(orders) > 1, "every epoch has the same order"
    other_seed = ShardStream(
        module.train_set, 1, module.seed + 1, buffer_size=4, num_shards=3, rank=0, world_size=1
    )
    assert [other_seed.order(e) for e in range(4)] != [stream_of(module, 0, 1).order(e) for e in range(4)]


def epochs(loader: ShardLoader, count: int) -> list[dict[str, Any]]:
    out = []
    for epoch in range(count):
        loader.set_epoch(epoch)
        out += list(loader)
    return out


def test_batches_do_not_depend_on_workers_and_resume_exactly(
    tiny_env: TinyEnv, encoded: tuple[Path, Path]
) -> None:
    module = sharded(tiny_env, encoded[0], batch_size=2)
    straight = epochs(ShardLoader(stream_of(module)), 2)
    assert len(straight) == 6 and all(b["latent_mean"].shape[0] == 2 for b in straight)
    with_workers = epochs(ShardLoader(stream_of(module), num_workers=2), 2)
    for a, b in zip(straight, with_workers, strict=True):
        assert_same_batch(a, b)
    first = ShardLoader(stream_of(module))
    first.set_epoch(1)
    taken = list(itertools.islice(first, 1))
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batches"] == 1
    resumed = ShardLoader(stream_of(module), num_workers=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    rest = list(resumed)
    assert resumed.state_dict()["batches"] == 3
    for a, b in zip(taken + rest, straight[3:], strict=True):
        assert_same_batch(a, b)


def test_crops_follow_seed_epoch_and_record_not_position(
    tiny_env: TinyEnv, encoded: tuple[Path, Path]
) -> None:
    module = sharded(tiny_env, encoded[0], batch_size=1, max_frames=40)
    one = {b["keys"][0]: float(b["crop_start"][0]) for b in epochs(ShardLoader(stream_of(module)), 1)}
    two = {}
    for rank in (0, 1):
        loader = ShardLoader(stream_of(module, rank, 2))
        two.update({b["keys"][0]: float(b["crop_start"][0]) for b in epochs(loader, 1)})
    assert one == two and len(set(one.values())) > 1


def test_a_record_without_a_row_is_encoded_online(
    tiny_env: TinyEnv, tmp_path: Path, encoded: tuple[Path, Path]
) -> None:
    encoder = ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers)
    dataset = make_dataset(tmp_path / "ds", count=3, validation=1)
    folder = build_cache(dataset, encoder, progress=False).cache_dir
    missing = sorted(folder.glob("*.safetensors"))[0]
    missing.unlink()
    write_shards(folder, 2)
    module = sharded(tiny_env, dataset, batch_size=1)
    assert module.cached_records == 3
    items = [module.train_set[i] for i in range(3)]
    assert all(item is not None for item in items) and module.skipped_items() == 0
    assert missing.exists()  # the online encoding was written back as a per-song entry


def test_missing_or_corrupt_shard_is_one_line_naming_the_file(tiny_env: TinyEnv, tmp_path: Path) -> None:
    encoder = ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers)
    dataset = make_dataset(tmp_path / "ds", count=2, validation=1)
    folder = build_cache(dataset, encoder, progress=False).cache_dir
    with pytest.raises(RefrainInputError, match="state.json missing.*--shards N"):
        sharded(tiny_env, dataset)
    write_shards(folder, 2)
    first, second = shard_files(shards_dir(folder))
    second.write_bytes(second.read_bytes()[:100])
    with pytest.raises(RefrainInputError) as error:
        sharded(tiny_env, dataset)
    assert str(second) in str(error.value) and "unreadable shard" in str(error.value)
    assert "--shards N" in str(error.value) and "\n" not in str(error.value)
    second.unlink()
    with pytest.raises(RefrainInputError, match=f"{second}: shard file missing"):
        sharded(tiny_env, dataset)
    with pytest.raises(RefrainInputError, match="data.loader.cache_format"):
        sharded(tiny_env, dataset, cache_format="tar")


def test_cache_folder_of_the_fixture_is_the_training_one(
    tiny_env: TinyEnv, encoded: tuple[Path, Path]
) -> None:
    dataset, folder = encoded
    module = sharded(tiny_env, dataset)
    assert module.cache_folder == folder == cache_dir(dataset, module.fingerprint)
    assert module.cached_records == SONGS


def test_a_bad_row_is_skipped_counted_and_the_epoch_goes_on(
    tiny_env: TinyEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers)
    dataset = make_dataset(tmp_path / "ds", count=4, validation=1)
    folder = build_cache(dataset, encoder, progress=False).cache_dir
    poisoned = sorted(folder.glob("*.safetensors"))[1]
    entry = FileEntry(poisoned)
    tensors = entry.load_all()
    tensors["latent_mean"].fill_(float("nan"))  # in every crop
    write_entry(poisoned, TensorEntry(tensors, entry.meta))  # a valid checksum over bad values
    write_shards(folder, 2)
    module = sharded(tiny_env, dataset, batch_size=1)
    loader = ShardLoader(stream_of(module, num_shards=2))
    seen = [key for batch in epochs(loader, 2) for key in batch["keys"]]
    assert len(seen) == 6 and entry.meta.key not in seen  # 4 records x 2 epochs, the bad one twice left out
    assert module.skipped_items() == 2
    assert f"{shards_dir(folder)} (row 1, {entry.meta.content_hash}): holds NaN/inf values" in caplog.text
    assert module.quarantined() == [f"{entry.meta.key} ({module.train_set.records[1]['filename']})"]


def test_lora_data_refuses_shards_with_one_line(
    tiny_env: TinyEnv, encoded: tuple[Path, Path], tmp_path: Path
) -> None:
    from refrain.lora.data import LoraDataModule

    spec = json.loads((Path(__file__).parents[2] / "lora_configs" / "text2sample.json").read_text())
    (tmp_path / "lora.json").write_text(json.dumps({**spec, "data": {}}))
    module = LoraDataModule(
        lora_config_path=str(tmp_path / "lora.json"),
        dataset_path=str(encoded[0]),
        vae_bundle=str(tiny_env.bundle),
        teachers=tiny_env.teachers,
        batch_size=1,
        loader=LoaderOptions(num_workers=0, cache_format="shards"),
    )
    module.setup("fit")
    with pytest.raises(
        RefrainInputError, match="data.loader.cache_format: shards is read by DiT training only"
    ):
        module.train_dataloader()
