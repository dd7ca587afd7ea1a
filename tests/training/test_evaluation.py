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
