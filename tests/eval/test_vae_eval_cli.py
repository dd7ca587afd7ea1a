"""refrain-eval vae on a real prepared dataset and a tiny real VAE bundle; refrain-eval compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.bundles import save_vae
from helpers.tiny_runs import write_songs
from helpers.tiny_vae import TINY

from refrain.cli.eval import main
from refrain.data.prepare import PrepareOptions, prepare_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_world")
    dataset = root / "dataset"
    prepare_dataset(
        PrepareOptions(
            output_dir=dataset,
            input_dir=write_songs(root / "songs", count=4),
            val_fraction=0.5,
            progress=False,
        )
    )
    save_vae(root / "vae", TINY)
    return {"root": root, "dataset": dataset, "vae": root / "vae"}


def test_vae_table_rows_and_baseline_degrade_with_bitrate(world: dict[str, Path], capsys) -> None:
    out = world["root"] / "eval_a"
    argv = [
        "vae",
        "--bundle",
        str(world["vae"]),
        "--dataset_path",
        str(world["dataset"]),
        "--seconds",
        "2",
        "--conditions",
        "clean,cbr320,cbr64",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    report = json.loads((out / "eval.json").read_text())
    rows = {(r["system"], r["condition"]): r for r in report["rows"]}
    assert set(rows) == {
        ("vae", "clean"),
        ("vae", "cbr320"),
        ("vae", "cbr64"),
        ("input", "cbr320"),
        ("input", "cbr64"),
    }
    # the do-nothing baseline gets worse as the bitrate falls
    assert rows[("input", "cbr64")]["lsd"] > rows[("input", "cbr320")]["lsd"]
    assert rows[("input", "cbr64")]["mcd"] > rows[("input", "cbr320")]["mcd"]
    assert rows[("input", "cbr64")]["si_sdr"] < rows[("input", "cbr320")]["si_sdr"]
    assert report["inputs"]["bundles"]["vae"]["bundle_hash"]
    assert (out / "eval.md").read_text().startswith("# VAE reconstruction")
    assert (out / "vae_mp3.png").stat().st_size > 10_000
    assert "| system | condition |" in capsys.readouterr().out

    # compare a report with itself: every figure equal
    assert main(["compare", str(out), str(out / "eval.json")]) == 0
    assert "B better in 0, worse in 0" in capsys.readouterr().out


def test_bad_condition_is_one_line_before_loading(world: dict[str, Path], capsys) -> None:
    argv = [
        "vae",
        "--bundle",
        str(world["vae"]),
        "--dataset_path",
        str(world["dataset"]),
        "--conditions",
        "aac128",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "aac128" in err and len(err.splitlines()) == 1
