"""refrain-eval songs with tiny random CLAP, Whisper and HuBERT folders loaded like real downloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.eval_models import write_eval_models

from refrain.cli.eval import main

RATE = 44100


def write_generated(folder: Path, count: int = 3, base_hz: float = 300.0) -> Path:
    """Songs with a refrain-infer style sidecar (params.prompt / params.lyrics) beside each."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    t = np.arange(int(2.5 * RATE)) / RATE
    for index in range(count):
        wave = 0.2 * np.sin(2 * np.pi * (base_hz + 90 * index) * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2
        wave += 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"song{index}.flac", np.stack([wave, wave]).T.astype(np.float32), RATE)
        params = {"prompt": "ambient, calm" if index % 2 else "rock, guitar", "lyrics": "hello night city"}
        (folder / f"song{index}.json").write_text(json.dumps({"params": params}))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("songs_eval")
    return {
        "root": root,
        "generated": write_generated(root / "generated"),
        "reference": write_generated(root / "reference", 4, base_hz=250.0),
        **write_eval_models(root / "models"),
    }


def songs_argv(world: dict[str, Path], generated: Path, out: Path) -> list[str]:
    return [
        "songs",
        "--generated",
        str(generated),
        "--reference",
        str(world["reference"]),
        "--mert",
        str(world["mert"]),
        "--mert_sample_rate",
        "16000",
        "--clap",
        str(world["clap"]),
        "--whisper",
        str(world["whisper"]),
        "--language",
        "en",
        "--cache_dir",
        str(world["root"] / "cache"),
        "--out",
        str(out),
        "--quiet",
    ]


def test_songs_report_has_every_figure_and_reuses_cached_embeddings(world: dict[str, Path], capsys) -> None:
    out = world["root"] / "eval1"
    assert main(songs_argv(world, world["generated"], out)) == 0
    report = json.loads((out / "eval.json").read_text())
    generated, reference = report["rows"]
    assert generated["set"] == "generated" and generated["songs"] == 3 and reference["songs"] == 4
    assert generated["fad_mert"] > 0 and generated["fad_clap"] > 0
    assert -1.0 <= generated["clap"] <= 1.0
    assert generated["per"] >= 0.0 and generated["wer"] >= 0.0
    song = report["per_song"]["generated"][0]
    assert {"loudness_lufs", "loudness_std_db", "centroid_hz", "transcript", "wer", "per"} <= set(song)
    assert set(report["inputs"]["models"]) == {"mert", "clap", "whisper"}
    assert (out / "songs.png").stat().st_size > 5000
    assert (
        report["timing"]["cache_misses"] == 2 * 7
    )  # two embedders x seven songs, CLAP score reads the cache

    out2 = world["root"] / "eval2"
    assert main(songs_argv(world, world["generated"], out2)) == 0
    again = json.loads((out2 / "eval.json").read_text())
    assert again["timing"]["cache_misses"] == 0
    assert again["rows"] == report["rows"]
    capsys.readouterr()
    assert main(["compare", str(out), str(out2)]) == 0
    assert "worse in 0" in capsys.readouterr().out


def test_fad_of_a_set_against_itself_is_zero(world: dict[str, Path]) -> None:
    out = world["root"] / "self"
    assert main(songs_argv(world, world["reference"], out)) == 0
    row = json.loads((out / "eval.json").read_text())["rows"][0]
    assert row["fad_mert"] == pytest.approx(0.0, abs=1e-6) and row["fad_clap"] == pytest.approx(0.0, abs=1e-6)


def test_missing_model_folder_is_one_line(world: dict[str, Path], capsys) -> None:
    argv = [
        "songs",
        "--generated",
        str(world["generated"]),
        "--reference",
        str(world["reference"]),
        "--clap",
        str(world["root"] / "nowhere"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --clap") and len(err.splitlines()) == 1
