"""int8 teacher features with stored scales: error bound, outlier channels, fingerprint, the real read path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_cache import TinyEnv, build_tiny_env, make_dataset

from refrain.data.cache import CacheEntryError, EntryMeta, FileEntry, TensorEntry, open_entry
from refrain.data.cache_build import build_cache
from refrain.data.conditioning_encoder import ConditioningEncoder, EncodeSettings, encoder_fingerprint
from refrain.data.crops import Crop, teacher_span
from refrain.data.dit_dataset import DiTDataModule
from refrain.data.feature_quant import QMAX, QUANT_BLOCK, SCALE_PREFIX, dequantize_rows, quantize_int8
from refrain.data.options import LoaderOptions, OnlineEncoding

INT8 = EncodeSettings(feature_dtype="int8")


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory) -> TinyEnv:
    return build_tiny_env(tmp_path_factory.mktemp("tiny_env"))


def block_max(x: torch.Tensor, block: int = QUANT_BLOCK) -> torch.Tensor:
    """max |x| of each value's (block, channel), per value."""
    rows = torch.arange(x.shape[0]) // block
    out = torch.zeros_like(x)
    for b in rows.unique():
        out[rows == b] = x[rows == b].abs().amax(dim=0)
    return out


def test_round_trip_error_is_at_most_half_a_step_of_its_block_and_channel() -> None:
    torch.manual_seed(0)
    x = torch.randn(150, 48) * torch.logspace(-3, 2, 48)  # channels from 1e-3 to 1e2
    x[70:80] *= 20.0  # a loud passage inside the second block
    codes, scale = quantize_int8(x)
    assert codes.dtype == torch.int8 and codes.shape == x.shape and int(codes.abs().max()) == QMAX
    assert scale.dtype == torch.float32 and scale.shape == (math.ceil(150 / QUANT_BLOCK), 48)
    error = (dequantize_rows(codes, scale, 0) - x).abs()
    assert bool((error <= block_max(x) / (2 * QMAX) * (1 + 1e-5) + 1e-12).all())
    # the loud passage coarsens only its own block: the third block keeps its fine steps
    third = slice(2 * QUANT_BLOCK, 150)
    assert float(error[third].max()) <= float(x[third].abs().max()) / (2 * QMAX) * (1 + 1e-5)
    assert torch.equal(quantize_int8(torch.zeros(5, 3))[0], torch.zeros(5, 3, dtype=torch.int8))


def test_an_outlier_channel_beyond_float8_range_keeps_the_others_fine() -> None:
    torch.manual_seed(1)
    x = torch.randn(200, 64)
    x[:, 7] = 600.0 + 50.0 * torch.randn(200)  # MERT-like: far above float8 e4m3's 448
    back = dequantize_rows(*quantize_int8(x), 0)
    ordinary = [c for c in range(64) if c != 7]
    relative = (back - x)[:, ordinary].norm() / x[:, ordinary].norm()
    assert float(relative) < 0.01
    assert float(((back - x)[:, 7]).abs().max()) <= float(x[:, 7].abs().max()) / (2 * QMAX) * (1 + 1e-5)
    # the bare cast this replaces: the outlier saturates, so its error is tens of units
    assert float((x.to(torch.float8_e4m3fn).float() - x)[:, 7].abs().max()) > 100.0
    # one scale for all channels would leave the ordinary ones a level or two (what per channel avoids)
    shared = x.abs().max() / QMAX
    assert float(((x / shared).round() * shared - x)[:, ordinary].norm() / x[:, ordinary].norm()) > 0.3


def test_non_finite_features_stay_visible() -> None:
    x = torch.ones(70, 4)
    x[3, 2] = float("nan")
    back = dequantize_rows(*quantize_int8(x), 0)
    assert bool(torch.isnan(back[:QUANT_BLOCK, 2]).all()) and bool(torch.isfinite(back[QUANT_BLOCK:]).all())


def test_a_crop_reads_the_same_values_as_the_whole_song() -> None:
    torch.manual_seed(2)
    x = torch.randn(200, 8) * 3
    codes, scale = quantize_int8(x)
    meta = EntryMeta("h", "f", "k", ["p"], ["tags0"], 8000, 8000)
    entry = TensorEntry({"teacher.t": codes, SCALE_PREFIX + "t": scale}, meta)
    whole = dequantize_rows(codes, scale, 0)
    for start, stop in ((0, 200), (60, 70), (63, 129), (130, 131), (190, 260), (200, 200)):
        assert torch.equal(entry.teacher("t", start, stop), whole[start:stop]), (start, stop)
    assert entry.teacher("t", 5, 9).dtype == torch.float32


def test_the_storage_dtype_is_part_of_the_cache_key_and_a_bad_one_is_one_line(
    tiny_env: TinyEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    from hydra.utils import instantiate

    from refrain.cli.train import one_line_errors
    from refrain.config import compose_config

    keys = {
        encoder_fingerprint(tiny_env.bundle, None, tiny_env.teachers, EncodeSettings(feature_dtype=dtype))
        for dtype in ("float32", "bfloat16", "float16", "int8")
    }
    assert len(keys) == 4
    cfg = compose_config(["data=latents", "data.storage.feature_dtype=int4"])
    with pytest.raises(SystemExit) as stop, one_line_errors():
        instantiate(cfg.data.storage)
    assert stop.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "feature_dtype" in message and "'int4'" in message
    assert "float32, bfloat16, float16, int8" in message
    with pytest.raises(Exception, match="latent_dtype.*use one of float32, bfloat16, float16$"):
        EncodeSettings(latent_dtype="int8")  # latents stay float


def test_an_int8_entry_reads_through_the_data_module_as_dequantised_float32(
    tmp_path: Path, tiny_env: TinyEnv
) -> None:
    dataset = make_dataset(tmp_path / "ds", count=1, validation=0)
    exact = ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers)
    small = ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers, INT8)
    exact_dir = build_cache(dataset, exact, progress=False, num_workers=0).cache_dir
    report = build_cache(dataset, small, progress=False, num_workers=0)
    assert report.encoded == 1 and report.cache_dir != exact_dir
    module = DiTDataModule(
        str(dataset),
        str(tiny_env.bundle),
        teachers=tiny_env.teachers,
        batch_size=1,
        max_frames=60,
        seed=3,
        storage=INT8,
        online=OnlineEncoding(fallback=False),  # only the cache: an online encode would hide a miss
        loader=LoaderOptions(num_workers=0),
    )
    module.setup("fit")
    assert module.train_set is not None
    item = module.train_set[0]
    record = module.train_set.records[0]
    path = report.cache_dir / f"{record['content_hash']}.safetensors"
    stored = open_entry(path, verify=True).load_all()  # --verify's checks pass on an int8 entry
    reference = FileEntry(exact_dir / path.name).load_all()
    seconds = FileEntry(exact_dir / path.name).meta.audio_seconds
    crop = Crop(round(item["crop_start"] * 100.0), 60, 100.0)  # 100 latent frames/s
    assert item["latent_mean"].shape[-1] == 60 and stored["style"].dtype == torch.bfloat16
    for name, features in item["teacher_features"].items():
        codes, scale = stored[f"teacher.{name}"], stored[SCALE_PREFIX + name]
        assert codes.dtype == torch.int8 and features.dtype == torch.float32 and features.shape[0] > 0
        first, stop = teacher_span(crop, codes.shape[0], seconds)
        assert torch.equal(features, dequantize_rows(codes, scale, 0)[first:stop])
        exact_rows = reference[f"teacher.{name}"][first:stop]  # the float32 cache: within half a step
        step = scale.repeat_interleave(QUANT_BLOCK, dim=0)[first:stop]
        assert bool(((features - exact_rows).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all())


def test_scales_that_do_not_fit_their_teacher_are_refused(tmp_path: Path) -> None:
    from refrain.data.cache import write_entry

    meta = EntryMeta("h", "f", "k", ["p"], ["tags0"], 8000, 8000)
    codes, scale = quantize_int8(torch.randn(100, 4))
    tensors = {
        "latent_mean": torch.zeros(4, 10),
        "latent_std": torch.ones(4, 10),
        "style": torch.zeros(1, 3, 8),
        "style_mask": torch.ones(1, 3, dtype=torch.bool),
        "teacher.t": codes,
        SCALE_PREFIX + "t": scale[:1],
    }
    write_entry(tmp_path / "h.safetensors", TensorEntry(tensors, meta))
    with pytest.raises(CacheEntryError, match=r"teacher_scale.t is \(1, 4\), expected \(2, 4\)"):
        open_entry(tmp_path / "h.safetensors")


def test_shards_and_the_online_path_give_the_cached_int8_features(tmp_path: Path, tiny_env: TinyEnv) -> None:
    from refrain.data.shards import ShardedCache, shards_dir, write_shards

    dataset = make_dataset(tmp_path / "ds", count=1, validation=0)
    small = ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers, INT8)
    folder = build_cache(dataset, small, progress=False, num_workers=0).cache_dir
    (path,) = folder.glob("*.safetensors")
    write_shards(folder, 1)
    shards = ShardedCache(shards_dir(folder))
    content_hash = path.name.removesuffix(".safetensors")
    assert shards.table()["entry"][0] == path.read_bytes()  # the entry's bytes, unchanged
    cached, sharded = FileEntry(path), shards.entry(content_hash)
    online = small.encode_record(_record(dataset, content_hash))  # what a record without an entry gets
    for name in cached.teacher_names:
        frames = cached.teacher_frames(name)
        expected = cached.teacher(name, 3, frames)
        assert expected.dtype == torch.float32
        assert torch.equal(sharded.teacher(name, 3, frames), expected)
        assert torch.equal(online.teacher(name, 3, frames), expected)


def _record(dataset: Path, content_hash: str) -> dict:
    from refrain.data.schema import load_prepared

    (record,) = [r for r in load_prepared(dataset)["train"] if r["content_hash"] == content_hash]
    return record
