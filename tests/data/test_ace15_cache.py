"""refrain-encode --ace15 fills ACE-Step 1.5's frozen text cache (Qwen3 prompt states, lyric token ids) with
exactly what the online path computes, and a training run from it runs no Qwen3 forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.ace15 import ace15_low_rate_release, ace15_release, vae_encodes  # noqa: F401 - fixtures
from helpers.tiny_runs import ace15_run_argv, release_world, train_in_process
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model

from refrain.cli.ace15 import main as ace15_cli
from refrain.cli.encode import main as encode
from refrain.data.ace15_cache import lyric_windows
from refrain.data.collate import collate_dit
from refrain.data.crops import Crop, crop_lyrics, record_sentences
from refrain.data.dit_dataset import DiTDataModule
from refrain.data.schema import load_prepared
from refrain.models.backbones.ace15 import load_ace15
from refrain.models.backbones.ace15_text import text_cache_dir
from refrain.models.backbones.ace15_timbre import TimbreSide, timbre_cache_dir

pytestmark = pytest.mark.slow
MAX_FRAMES = 32


@pytest.fixture
def forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts Qwen3 encoder forwards (the only expensive frozen call of the ACE-Step 1.5 text side)."""
    calls: list[int] = []
    original = Qwen3Model.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Qwen3Model, "forward", counted)
    return calls


@pytest.fixture(scope="module")
def world(ace15_release: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    world = release_world(tmp_path_factory.mktemp("ace15_cache"), ace15_release, 48000, ace15_cli)
    argv = ["--dataset_path", str(world["dataset"]), "--vae_bundle", str(world["vae"]), "--num_workers", "0"]
    code = encode([*argv, "--ace15", str(ace15_release), "--max_frames", str(MAX_FRAMES), "--no_progress"])
    assert code == 0
    return world


def cache_files(dataset: Path) -> dict[str, int]:
    return {
        kind: len(list(text_cache_dir(dataset).rglob(f"{kind}/*.safetensors")))
        for kind in ("prompt", "lyrics")
    }


def test_lyric_windows_are_every_crop_text() -> None:
    record = {
        "lrc": [{"time": t, "text": f"line {t}"} for t in (0.2, 0.9, 1.5, 2.4)],
        "phoneme_ids": [[1]] * 4,
    }
    sentences = record_sentences(record)
    every = {crop_lyrics(sentences, Crop(s, 25, 25.0))[1] for s in range(75 - 25 + 1)}
    assert set(lyric_windows(record, 75, 25, 25.0)) == every and len(every) > 3


def test_the_prefilled_cache_is_what_the_online_path_computes(world, forwards: list[int]) -> None:
    files = cache_files(world["dataset"])
    assert files["prompt"] > 0 and files["lyrics"] > 0
    data = DiTDataModule(str(world["dataset"]), str(world["vae"]), batch_size=2, max_frames=MAX_FRAMES)
    data.setup()
    assert data.train_set is not None and data.val_set is not None
    items = [data.train_set[key] for key in range(12)] + [data.val_set[i] for i in range(len(data.val_set))]
    batches = [collate_dit(items[i : i + 2]) for i in range(0, len(items), 2)]
    cached = load_ace15(world["release"], repa_layer=2, dataset_path=world["dataset"])
    online = load_ace15(world["release"], repa_layer=2)  # no cache: every prompt through Qwen3
    read = [cached.conditioning_from_batch(batch) for batch in batches]
    assert forwards == [] and cache_files(world["dataset"]) == files  # all read back, nothing new
    computed = [online.conditioning_from_batch(batch) for batch in batches]
    assert len(forwards) > 0  # the counter sees the online path's encoder
    for a, b in zip(read, computed, strict=True):
        assert torch.equal(a.style, b.style) and torch.equal(a.lyrics, b.lyrics)
        assert torch.equal(a.style_mask, b.style_mask) and torch.equal(a.lyrics_mask, b.lyrics_mask)


def test_a_run_from_the_prefilled_cache_runs_no_qwen3_forward(world, forwards: list[int], capsys) -> None:
    files = cache_files(world["dataset"])
    code, err = train_in_process(
        ace15_run_argv(world, world["root"] / "run", 3, MAX_FRAMES, lora=world["root"] / "lora.json"),
        capsys,
    )
    assert code == 0, err[-3000:]
    print(f"Qwen3 forwards in a 3-step ace15 LoRA run from the pre-filled cache: {len(forwards)}")
    assert forwards == [] and cache_files(world["dataset"]) == files


def test_a_folder_that_is_no_release_is_refused_before_encoding(tmp_path: Path, capsys) -> None:
    code = encode(["--dataset_path", str(tmp_path), "--vae_bundle", str(tmp_path), "--ace15", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --ace15:") and "\n" not in err


@pytest.fixture(scope="module")
def timbre_world(ace15_low_rate_release: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """A world over the tiny release with a 1200 Hz VAE, pre-filled with ``--ace15_timbre`` too."""
    release = ace15_low_rate_release
    world = release_world(tmp_path_factory.mktemp("ace15_timbre"), release, 44100, ace15_cli)
    argv = ["--dataset_path", str(world["dataset"]), "--vae_bundle", str(world["vae"]), "--num_workers", "0"]
    extra = ["--ace15", str(release), "--max_frames", str(MAX_FRAMES), "--ace15_timbre", "--no_progress"]
    assert encode([*argv, *extra]) == 0
    return world


def test_prefilled_timbre_references_are_the_online_ones(
    timbre_world,
    vae_encodes: list[int],  # noqa: F811
) -> None:
    dataset, release = timbre_world["dataset"], timbre_world["release"]
    files = sorted(timbre_cache_dir(dataset).rglob("*.safetensors"))
    records = {str(r["content_hash"]) for part in load_prepared(dataset).values() for r in part}
    assert {f.stem for f in files} == records  # one reference per song
    data = DiTDataModule(str(dataset), str(timbre_world["vae"]), batch_size=2, max_frames=MAX_FRAMES)
    data.setup()
    assert data.train_set is not None
    items = [data.train_set[key] for key in range(6)]
    batches = [collate_dit(items[i : i + 2]) for i in range(0, len(items), 2)]
    cached = load_ace15(release, repa_layer=2, dataset_path=dataset, timbre="song")
    online = load_ace15(release, repa_layer=2, timbre="song")  # no cache: every song through the VAE
    read = [cached.conditioning_from_batch(batch).timbre for batch in batches]
    assert vae_encodes == [] and sorted(timbre_cache_dir(dataset).rglob("*.safetensors")) == files
    computed = [online.conditioning_from_batch(batch).timbre for batch in batches]
    assert len(vae_encodes) == 2 * len(batches)
    for a, b in zip(read, computed, strict=True):
        assert a is not None and a.shape == (2, 750, 8) and torch.equal(a, b)


def test_a_song_timbre_run_reads_the_prefilled_references(
    timbre_world,
    vae_encodes,  # noqa: F811
    capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = sorted(timbre_cache_dir(timbre_world["dataset"]).rglob("*.safetensors"))
    songs: list[str] = []
    original = TimbreSide.song

    def counted(self, content_hash, filename, device):
        songs.append(content_hash)
        return original(self, content_hash, filename, device)

    monkeypatch.setattr(TimbreSide, "song", counted)
    run, lora = timbre_world["root"] / "run", timbre_world["root"] / "lora.json"
    argv = ace15_run_argv(timbre_world, run, 3, MAX_FRAMES, lora=lora)
    code, err = train_in_process([*argv, "task.model.timbre=song"], capsys)
    assert code == 0, err[-3000:]
    print(f"3-step timbre=song LoRA run: {len(songs)} references read, {len(vae_encodes)} VAE encodes")
    assert songs and set(songs) <= {f.stem for f in before}  # every crop read its song's reference
    assert vae_encodes == []
    assert sorted(timbre_cache_dir(timbre_world["dataset"]).rglob("*.safetensors")) == before
