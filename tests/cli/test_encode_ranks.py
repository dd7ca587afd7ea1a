"""`refrain-encode --devices N`: ranks split the records, the cache and index equal a 1-process run's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import DatasetDict

from refrain.bundles.vae import save_vae_bundle
from refrain.data.cache import read_index
from refrain.data.cache_build import rank_share
from refrain.data.prepare import save_dataset_atomic
from refrain.data.schema import empty_recaption, records_to_dataset
from refrain.models.teachers import create_random_hubert
from refrain.models.vae.oobleck import build_oobleck_vae

RATE = 8000


def test_rank_shares_are_disjoint_deterministic_and_cover_every_record() -> None:
    records = [{"content_hash": f"{(i * 7919) % 101:08x}"} for i in range(11)]
    shares = [rank_share(records, rank, 3) for rank in range(3)]
    hashes = [[r["content_hash"] for r in share] for share in shares]
    assert sorted(sum(hashes, [])) == sorted(r["content_hash"] for r in records)  # cover, no overlap
    assert hashes == [[r["content_hash"] for r in rank_share(records[::-1], k, 3)] for k in range(3)]
    assert [len(h) for h in hashes] == [4, 4, 3]


def _world(root: Path, songs: int = 5) -> dict[str, Path]:
    """A prepared dataset of short songs (varied lengths), a tiny VAE bundle and conf/repa/tiny_random's teachers."""
    data = root / "ds"
    data.mkdir(parents=True)
    records = []
    for index in range(songs):
        path = data / f"song{index}.wav"
        t = np.arange(int(RATE * (0.6 + 0.2 * index))) / RATE
        sf.write(path, np.stack([np.sin(2 * np.pi * (200 + 50 * index) * t)] * 2, axis=1) * 0.3, RATE)
        records.append(
            {
                "keys": f"song{index}",
                "filename": str(path),
                "tags": ["ambient", f"{80 + index} bpm"],
                "speaker_emb_path": "",
                "norm_lyrics": "",
                "recaption": empty_recaption(),
                "lrc": [],
                "lrc_source": "none",
                "phoneme_ids": [],
                "duration": len(t) / RATE,
                "sample_rate": RATE,
                "channels": 2,
                "language": "en",
                "content_hash": f"{(index * 37) % 11:064x}",
                "split": "train",
            }
        )
    save_dataset_atomic(
        DatasetDict({"train": records_to_dataset(records), "validation": records_to_dataset([])}), data
    )
    vae = build_oobleck_vae(
        sample_rate=RATE,
        downsampling_ratios=(2, 5, 8),
        channel_multiples=(1, 2, 2),
        encoder_hidden_size=8,
        decoder_channels=8,
        latent_channels=4,
    )
    bundle = save_vae_bundle(root / "bundle", vae.autoencoder, {})
    for name in ("mert", "mhubert"):
        create_random_hubert(root / "teachers" / name, hidden_size=32, num_layers=2)
    return {"data": data, "bundle": bundle, "teachers": root / "teachers"}


def _encode(world: dict[str, Path], data: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "refrain.cli.encode",
        "--dataset_path",
        str(data),
        "--vae_bundle",
        str(world["bundle"]),
        "--repa",
        "tiny_random",
        f"repa.teacher_root={world['teachers']}",
        "--split",
        "train",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--no_progress",
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _cache(data: Path) -> tuple[Path, dict[str, bytes], dict]:
    (folder,) = (data / "cache").iterdir()
    entries = {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}
    index = read_index(folder)
    index.pop("updated")
    return folder, entries, index


@pytest.mark.slow
def test_two_ranks_write_the_one_process_cache_and_redo_only_a_killed_ranks_part(tmp_path: Path) -> None:
    world = _world(tmp_path)
    single = tmp_path / "single"
    shutil.copytree(world["data"], single)
    _encode(world, single)
    two = _encode(world, world["data"], "--devices", "2")
    assert "records: 5 (encoded 5, reused 0, redone 0, failed 0)" in two.stdout  # rank 0 reports all ranks

    folder, entries, index = _cache(world["data"])
    _, single_entries, single_index = _cache(single)
    assert len(entries) == 5 and entries == single_entries  # byte-identical entries
    assert json.dumps(index, sort_keys=True) == json.dumps(single_index, sort_keys=True)

    # Rank 1 killed before finishing its share: its unfinished entries are the only ones encoded again.
    records = [{"content_hash": name.removesuffix(".safetensors")} for name in entries]
    lost = [r["content_hash"] for r in rank_share(records, 1, 2)][1:]
    for digest in lost:
        (folder / f"{digest}.safetensors").unlink()
    again = _encode(world, world["data"], "--devices", "2")
    assert f"records: 5 (encoded {len(lost)}, reused {5 - len(lost)}, redone 0, failed 0)" in again.stdout
    assert _cache(world["data"])[1] == single_entries
