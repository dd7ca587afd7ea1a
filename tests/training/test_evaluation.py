"""In-training evaluation on the real VAE task through trainer.py (tiny preset, a few steps)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers.tiny_runs import make_world, vae_argv

from refrain.cli.train import main as train_main
from refrain.config import compose_config


@pytest.mark.slow
def test_vae_evaluation_logs_figures_and_plots(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    run_dir = tmp_path / "run"
    evaluation = (
        "callbacks.evaluation={_target_:refrain.training.evaluation.VAEEvaluation,"
        f"dataset_path:{world['dataset']},every_n_steps:2,num_clips:1,seconds:1.0,"
        f"conditions:[clean,cbr64],metrics:[stoi,mcd],plot_path:{run_dir}/plots/eval_vae.png}}"
    )
    train_main([*vae_argv(world, run_dir, steps=4), evaluation])  # raises SystemExit on any error
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    logged = [r for r in rows if r.get("eval/cbr64/mcd")]
    assert [int(r["step"]) for r in logged] == [2, 4]
    assert -1.0 <= float(logged[0]["eval/clean/stoi"]) <= 1.0  # an untrained VAE: near 0
    assert (run_dir / "plots" / "eval_vae.png").stat().st_size > 5000


def test_full_vae_recipe_turns_evaluation_on_and_demo_leaves_it_off() -> None:
    full = compose_config(["experiment=vae_mp3", "dataset_path=/data/d", "run_dir=/runs/r"])
    assert full.callbacks.evaluation._target_ == "refrain.training.evaluation.VAEEvaluation"
    assert full.callbacks.evaluation.dataset_path == "/data/d"
    assert compose_config(["experiment=demo_vae"]).callbacks.evaluation is None


@pytest.mark.slow
def test_dit_sample_evaluation_logs_fad_and_clap(tmp_path: Path) -> None:
    from helpers.eval_models import write_tiny_clap
    from helpers.tiny_runs import dit_argv

    from refrain.data.prepare import PrepareOptions, prepare_dataset
    from refrain.models.teachers import create_random_hubert

    world = make_world(tmp_path / "world")  # then two validation songs, so FAD has two samples a side
    world["dataset"] = tmp_path / "dataset_half"
    prepare_dataset(
        PrepareOptions(
            output_dir=world["dataset"], input_dir=world["root"] / "songs", val_fraction=0.5, progress=False
        )
    )
    clap = write_tiny_clap(tmp_path / "clap")
    mert = create_random_hubert(tmp_path / "mert", hidden_size=16, num_layers=2, conv_channels=8)
    run_dir = tmp_path / "run"
    argv = [a for a in dit_argv(world, run_dir, steps=2) if a not in ("--every_plot_step", "1000")]
    evaluator = (
        f"task.plotter.evaluator={{_target_:refrain.training.evaluation.SampleEvaluation,mert:{mert},"
        f"mert_sample_rate:16000,clap:{clap}}}"
    )
    train_main(
        [
            *argv,
            "--every_plot_step",
            "2",
            "task.plotter.num_samples=2",
            "task.plotter.num_steps=2",
            "data.val_items=2",
            evaluator,
        ]
    )
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    logged = [r for r in rows if r.get("eval/fad_mert")]
    assert logged and int(logged[0]["step"]) == 2
    assert float(logged[0]["eval/fad_mert"]) >= 0.0 and -1.0 <= float(logged[0]["eval/clap"]) <= 1.0


def test_full_dit_recipe_evaluates_its_samples() -> None:
    cfg = compose_config(["experiment=dit_repa", "dataset_path=/d", "vae_bundle=/v", "run_dir=/r"])
    assert cfg.task.plotter.evaluator._target_ == "refrain.training.evaluation.SampleEvaluation"
    assert cfg.task.plotter.evaluator.mert == cfg.repa.mert_dir
    assert compose_config(["experiment=demo_dit"]).task.plotter.evaluator is None
