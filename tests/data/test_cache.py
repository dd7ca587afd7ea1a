"""The conditioning cache: whole-song entries, resumable atomic writes, corruption, fingerprints, variants.

The builders at the top (tiny Oobleck bundle, tiny random HuBERT teachers, small WAV datasets) are
shared with test_dit_dataset.py.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import DatasetDict

from refrain.bundles.vae import save_vae_bundle
from refrain.data.cache import CacheEntryError, FileEntry, cache_dir, entry_path, open_entry, read_index
from refrain.data.cache_build import build_cache
from refrain.data.conditioning_encoder import ConditioningEncoder, EncodeSettings, encoder_fingerprint
from refrain.data.prepare import save_dataset_atomic
from refrain.data.prompt_variants import prompt_variants, record_prompt_variants
from refrain.data.schema import empty_recaption, records_to_dataset
from refrain.models.teachers import TeacherSpec, create_random_hubert
from refrain.models.text_encoder import default_text_encoder_dir
from refrain.models.vae.oobleck import build_oobleck_vae

SAMPLE_RATE = 8000  # tiny VAE: hop 2*5*8 = 80 -> 100 latent frames per second


@dataclass
class TinyEnv:
    bundle: Path
    teachers: dict[str, TeacherSpec]
    root: Path


def make_bundle(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    vae = build_oobleck_vae(
        sample_rate=SAMPLE_RATE,
        downsampling_ratios=(2, 5, 8),
        channel_multiples=(1, 2, 2),
        encoder_hidden_size=8,
        decoder_channels=8,
        latent_channels=4,
    )
    # 0.5 s chunks with 0.1 s overlap: the 1-1.5 s test songs go through the chunked, crossfaded encoder.
    config = {"model": {"vae": {"chunk_seconds": 0.5, "overlap_seconds": 0.1}}}
    return save_vae_bundle(path, vae.autoencoder, config)


def make_teachers(root: Path) -> dict[str, TeacherSpec]:
    mert = create_random_hubert(root / "mert", hidden_size=32, num_layers=2, seed=1)
    hubert = create_random_hubert(root / "mhubert", hidden_size=16, num_layers=1, seed=2)
    return {
        "mert": TeacherSpec(
            "mert", str(mert), 24000, layer=1, chunk_seconds=0.5, normalize=True, feature_dim=32
        ),
        "mhubert": TeacherSpec("mhubert", str(hubert), 16000, layer=-1, chunk_seconds=30.0, feature_dim=16),
    }


def build_tiny_env(root: Path) -> TinyEnv:
    return TinyEnv(make_bundle(root / "vae_bundle"), make_teachers(root / "teachers"), root)


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory: pytest.TempPathFactory) -> TinyEnv:
    return build_tiny_env(tmp_path_factory.mktemp("tiny_env"))


def song_record(folder: Path, index: int, seconds: float = 1.25, **fields: Any) -> dict[str, Any]:
    """A record with a real WAV file, tags, two recaptions and three timed lyric lines."""
    path = folder / "audio" / f"song{index}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    left = 0.3 * np.sin(2 * np.pi * (220 + 55 * index) * t)
    right = 0.2 * np.sin(2 * np.pi * (330 + 40 * index) * t + index)
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    record = {
        "keys": f"song{index}",
        "filename": str(path),
        "tags": ["pop", "female vocals", f"{90 + index} bpm", "piano"],
        "speaker_emb_path": "",
        "norm_lyrics": "hello world\nsecond line\nthird",
        "recaption": empty_recaption(
            {"simplified": f"a pop song number {index}", "descriptive": "warm piano pop"}
        ),
        "lrc": [
            {"time": 0.1, "text": "hello world"},
            {"time": 0.45, "text": "second line"},
            {"time": 0.83, "text": "third"},
        ],
        "lrc_source": "lrc",
        "phoneme_ids": [[5, 6, 7, 2], [8, 9, 2], [10, 11, 12, 2]],
        "duration": seconds,
        "sample_rate": SAMPLE_RATE,
        "channels": 2,
        "language": "en",
        "content_hash": f"{index:04d}" + "ab" * 30,
        "split": "train",
    }
    record.update(fields)
    return record


def write_dataset(
    folder: Path, train: list[dict[str, Any]], validation: list[dict[str, Any]] | None = None
) -> Path:
    """Save records as a prepared dataset (`<folder>/hf`), the layout `load_prepared` reads."""
    validation = [dict(r, split="validation") for r in (validation or [])]
    folder.mkdir(parents=True, exist_ok=True)
    splits = DatasetDict({"train": records_to_dataset(train), "validation": records_to_dataset(validation)})
    save_dataset_atomic(splits, folder)
    return folder


def make_dataset(folder: Path, count: int = 3, validation: int = 1) -> Path:
    songs = [song_record(folder, i, seconds=1.0 + 0.25 * (i % 3)) for i in range(count + validation)]
    return write_dataset(folder, songs[:count], songs[count:])


@pytest.fixture(scope="module")
def encoder(tiny_env: TinyEnv) -> ConditioningEncoder:
    return ConditioningEncoder.from_paths(tiny_env.bundle, None, tiny_env.teachers)


# ----------------------------------------------------------------------------------- entries
def test_entries_hold_the_whole_song(tmp_path: Path, encoder: ConditioningEncoder) -> None:
    dataset = make_dataset(tmp_path / "ds", count=2, validation=1)
    report = build_cache(dataset, encoder, progress=False)
    assert (report.records, report.encoded, report.reused, report.failed) == (3, 3, 0, [])
    record = song_record(tmp_path / "ds", 1, seconds=1.25)  # rewrites the same file: same samples
    entry = open_entry(
        entry_path(report.cache_dir, record["content_hash"]), record["content_hash"], encoder.fingerprint
    )
    samples = round(1.25 * SAMPLE_RATE)
    assert entry.num_frames == math.ceil(samples / 80) and entry.meta.num_samples == samples
    audio = encoder.load_audio(record)
    posterior = encoder.vae.encode_chunked(audio[None])
    assert torch.equal(entry.latent(0, entry.num_frames)[0], posterior.mean[0])
    assert torch.equal(entry.latent(0, entry.num_frames)[1], posterior.std[0])
    for name, teacher in encoder.teachers.items():
        expected = teacher.num_frames(round(samples * teacher.spec.sample_rate / SAMPLE_RATE))
        assert entry.teacher_frames(name) == expected
        assert entry.teacher(name, 0, expected).shape == (expected, teacher.spec.feature_dim)
    variants = record_prompt_variants(record)
    assert entry.meta.prompts == [v.text for v in variants] and entry.num_variants == len(variants) >= 4
    hidden, mask = encoder.encode_prompts([v.text for v in variants])
    assert torch.equal(entry.style(3), hidden[3][mask[3]])
    index = read_index(report.cache_dir)
    assert set(index["entries"]) == {f"{i:04d}" + "ab" * 30 for i in range(3)}
    assert index["fingerprint"] == encoder.fingerprint and index["bytes_per_audio_minute"] > 0
    assert report.cache_bytes == sum(p.stat().st_size for p in report.cache_dir.glob("*.safetensors"))


def test_resume_after_interruption_encodes_only_the_rest(
    tmp_path: Path, encoder: ConditioningEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = make_dataset(tmp_path / "ds", count=4, validation=1)
    real = ConditioningEncoder.encode_record
    calls: list[str] = []

    def interrupted(self: ConditioningEncoder, record: dict, audio: torch.Tensor | None = None):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(record["keys"])
        return real(self, record, audio)

    monkeypatch.setattr(ConditioningEncoder, "encode_record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_cache(dataset, encoder, progress=False)
    folder = cache_dir(dataset, encoder.fingerprint)
    assert len(list(folder.glob("*.safetensors"))) == 2
    assert not list(folder.glob(".*.tmp"))  # nothing half-written is left behind
    assert len(read_index(folder)["entries"]) == 2  # the index matches what was written
    monkeypatch.setattr(ConditioningEncoder, "encode_record", real)
    again = build_cache(dataset, encoder, progress=False)
    assert (again.reused, again.encoded, again.redone) == (2, 3, 0)
    assert (build_cache(dataset, encoder, progress=False).encoded, len(read_index(folder)["entries"])) == (
        0,
        5,
    )


def test_corrupt_entries_are_detected_and_redone(tmp_path: Path, encoder: ConditioningEncoder) -> None:
    dataset = make_dataset(tmp_path / "ds", count=3, validation=0)
    first = build_cache(dataset, encoder, progress=False)
    paths = sorted(first.cache_dir.glob("*.safetensors"))
    good = paths[2].read_bytes()
    good_tensors = {k: v.clone() for k, v in FileEntry(paths[2]).load_all().items()}  # not views of the mmap
    good_meta = FileEntry(paths[2]).meta
    paths[0].write_bytes(paths[0].read_bytes()[:-100])  # truncated
    paths[1].write_bytes(b"not a safetensors file at all")
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF  # one flipped bit pattern in the data: only the checksum can see it
    paths[2].write_bytes(bytes(flipped))
    with pytest.raises(CacheEntryError):
        FileEntry(paths[0])
    second = build_cache(dataset, encoder, progress=False)
    assert (second.redone, second.encoded, second.reused) == (2, 2, 1)
    third = build_cache(dataset, encoder, progress=False, verify=True)
    assert (third.redone, third.encoded) == (1, 1)
    redone = FileEntry(paths[2])
    assert redone.meta == good_meta and all(
        torch.equal(redone.load_all()[k], v) for k, v in good_tensors.items()
    )
    for path in paths:
        open_entry(path, verify=True)


def test_fingerprint_tracks_every_encoder_and_setting(tmp_path: Path, tiny_env: TinyEnv) -> None:
    settings = EncodeSettings()
    base = encoder_fingerprint(tiny_env.bundle, None, tiny_env.teachers, settings)
    assert base == encoder_fingerprint(
        tiny_env.bundle, default_text_encoder_dir(), tiny_env.teachers, settings
    )
    copy = shutil.copytree(default_text_encoder_dir(), tmp_path / "text_copy")
    assert (
        encoder_fingerprint(tiny_env.bundle, copy, tiny_env.teachers, settings) == base
    )  # content, not path
    (copy / "config.json").write_text(
        json.dumps({**json.loads((copy / "config.json").read_text()), "note": 1})
    )
    other_bundle = make_bundle(tmp_path / "other_vae", seed=1)
    spec = tiny_env.teachers["mert"]
    variants = [
        encoder_fingerprint(other_bundle, None, tiny_env.teachers, settings),
        encoder_fingerprint(tiny_env.bundle, copy, tiny_env.teachers, settings),
        encoder_fingerprint(tiny_env.bundle, None, {"mert": spec}, settings),
        encoder_fingerprint(
            tiny_env.bundle, None, {**tiny_env.teachers, "mert": replace(spec, layer=2)}, settings
        ),
        encoder_fingerprint(
            tiny_env.bundle, None, tiny_env.teachers, EncodeSettings(feature_dtype="float16")
        ),
        encoder_fingerprint(tiny_env.bundle, None, tiny_env.teachers, EncodeSettings(tag_shuffles=2)),
        encoder_fingerprint(tiny_env.bundle, None, tiny_env.teachers, EncodeSettings(teacher_rate="latent")),
    ]
    assert len({base, *variants}) == 8
    # The loss weight does not change the features, so it keeps the cache.
    weighted = {**tiny_env.teachers, "mert": replace(spec, weight=0.5)}
    assert encoder_fingerprint(tiny_env.bundle, None, weighted, settings) == base


def test_ranks_encode_their_shares_and_rank_0_writes_one_index(
    tmp_path: Path, encoder: ConditioningEncoder
) -> None:
    from refrain.data.cache_build import rank_share, unique_records

    dataset = make_dataset(tmp_path / "ds", count=3, validation=1)
    rank1: list = []
    one = build_cache(  # rank 1 runs first here; the gather hands it a stand-in for rank 0's part
        dataset,
        encoder,
        progress=False,
        rank=1,
        world_size=2,
        gather=lambda item: rank1.append(item) or [item, item],
    )
    records = unique_records(dataset)
    written_by_1 = {p.name.removesuffix(".safetensors") for p in one.cache_dir.glob("*.safetensors")}
    assert written_by_1 == {r["content_hash"] for r in rank_share(records, 1, 2)} and len(written_by_1) == 2
    assert not (one.cache_dir / "index.json").exists()  # only rank 0 writes the index
    zero = build_cache(
        dataset, encoder, progress=False, rank=0, world_size=2, gather=lambda item: [item, rank1[0]]
    )
    assert (zero.records, zero.encoded, zero.reused) == (4, 4, 0)  # rank 0's report covers both ranks
    assert set(read_index(zero.cache_dir)["entries"]) == {r["content_hash"] for r in records}


def test_missing_audio_is_counted_and_the_run_goes_on(tmp_path: Path, encoder: ConditioningEncoder) -> None:
    folder = tmp_path / "ds"
    songs = [song_record(folder, i) for i in range(3)]
    songs[1]["filename"] = str(folder / "audio" / "gone.wav")
    report = build_cache(write_dataset(folder, songs), encoder, progress=False, num_workers=0)
    assert report.encoded == 2 and [key for key, _ in report.failed] == ["song1"]
    assert "file not found" in report.failed[0][1]


def test_bf16_storage_halves_latents(tmp_path: Path, tiny_env: TinyEnv) -> None:
    dataset = make_dataset(tmp_path / "ds", count=1, validation=0)
    small = ConditioningEncoder.from_paths(
        tiny_env.bundle, None, None, EncodeSettings(latent_dtype="bfloat16", feature_dtype="float16")
    )
    report = build_cache(dataset, small, progress=False)
    (path,) = report.cache_dir.glob("*.safetensors")
    tensors = FileEntry(path).load_all()
    assert tensors["latent_mean"].dtype == torch.bfloat16 and tensors["style"].dtype == torch.float16
    assert FileEntry(path).latent(0, 5)[0].dtype == torch.float32  # training always gets float32


def test_default_settings_keep_the_fingerprint_caches_had_before_teacher_rate(tiny_env: TinyEnv) -> None:
    from refrain.data.cache import fingerprint_of
    from refrain.fileio import folder_digest

    old_identity = {  # the identity as it was computed before the teacher_rate setting existed
        "vae": fingerprint_of(
            {"files": json.loads((tiny_env.bundle / "manifest.json").read_text())["files"]}
        ),
        "text_encoder": folder_digest(default_text_encoder_dir()),
        "teachers": {},
        "settings": {
            "tag_shuffles": 4,
            "latent_dtype": "float32",
            "feature_dtype": "float32",
            "text_max_length": 256,
        },
    }
    assert encoder_fingerprint(tiny_env.bundle, None, None, EncodeSettings()) == fingerprint_of(old_identity)


def test_pooled_teacher_features_sit_at_the_latent_rate(tmp_path: Path, tiny_env: TinyEnv) -> None:
    from refrain.data.conditioning_encoder import pool_to_frames

    features = torch.arange(14.0).reshape(7, 2)
    assert torch.equal(pool_to_frames(features, 7), features) and pool_to_frames(features, 9).shape == (7, 2)
    assert torch.allclose(
        pool_to_frames(features, 2), torch.tensor([[3.0, 4.0], [9.0, 10.0]])
    )  # frames 0-3, 3-6

    torch.manual_seed(0)  # hop 8 * 10 * 10 = 800 at 8 kHz: 10 latent frames/s, below both teachers' rates
    vae = build_oobleck_vae(
        sample_rate=SAMPLE_RATE,
        downsampling_ratios=(8, 10, 10),
        channel_multiples=(1, 2, 2),
        encoder_hidden_size=8,
        decoder_channels=8,
        latent_channels=4,
    )
    bundle = save_vae_bundle(tmp_path / "slow_vae", vae.autoencoder, {})
    dataset = make_dataset(tmp_path / "ds", count=1, validation=0)
    native = ConditioningEncoder.from_paths(bundle, None, tiny_env.teachers)
    compact = ConditioningEncoder.from_paths(
        bundle,
        None,
        tiny_env.teachers,
        EncodeSettings(latent_dtype="bfloat16", feature_dtype="bfloat16", teacher_rate="latent"),
    )
    (wide,) = build_cache(dataset, native, progress=False).cache_dir.glob("*.safetensors")
    (small,) = build_cache(dataset, compact, progress=False).cache_dir.glob("*.safetensors")
    wide_t, small_t = FileEntry(wide).load_all(), FileEntry(small).load_all()
    frames = wide_t["latent_mean"].shape[-1]
    for name in ("mert", "mhubert"):
        pooled = small_t[f"teacher.{name}"]
        assert pooled.dtype == torch.bfloat16 and pooled.shape == (frames, wide_t[f"teacher.{name}"].shape[1])
        expected = pool_to_frames(wide_t[f"teacher.{name}"], frames)
        assert torch.allclose(pooled.float(), expected, rtol=1e-2, atol=1e-2)

    def teacher_bytes(tensors: dict[str, torch.Tensor]) -> int:
        return sum(t.nbytes for k, t in tensors.items() if k.startswith("teacher."))

    assert teacher_bytes(small_t) * 8 < teacher_bytes(wide_t)  # 75/50 -> 10 frames/s, 4 -> 2 bytes


# ----------------------------------------------------------------------------------- prompt variants
def test_prompt_variants_are_fixed_shuffles_plus_recaptions() -> None:
    tags = ["rock", "guitar", "fast", "male vocals", "live"]
    recaption = {"simplified": "fast live rock", "expanded": "", "analysis": "  "}
    variants = prompt_variants(tags, recaption, "hash-a", tag_shuffles=4)
    assert [v.name for v in variants] == ["tags0", "tags1", "tags2", "tags3", "simplified"]
    assert variants[0].text == "rock, guitar, fast, male vocals, live"
    assert all(sorted(v.text.split(", ")) == sorted(tags) for v in variants[:4])
    assert len({v.text for v in variants}) == 5
    assert variants == prompt_variants(tags, recaption, "hash-a", tag_shuffles=4)
    assert variants[1:4] != prompt_variants(tags, recaption, "hash-b", tag_shuffles=4)[1:4]
    assert [v.text for v in prompt_variants(["solo"], None, "h", 4)] == ["solo"]  # duplicates removed
    assert [(v.name, v.text) for v in prompt_variants([], None, "h", 4)] == [("empty", "")]
