"""The training function end to end on a toy task: checkpoints describe themselves, resume continues."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import open_dict

from refrain.config import compose_config
from refrain.training.run import train


def toy_config(tmp_path: Path, *extra: str):
    cfg = compose_config(
        [
            f"run_dir={tmp_path / 'run'}",
            "logger=csv",
            "callbacks.progress=null",
            "every_n_train_steps=3",
            "trainer.max_steps=6",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "trainer.accelerator=cpu",
            *extra,
        ]
    )
    with open_dict(cfg):
        cfg.task = {"_target_": "helpers.toy_task.ToyRegressionTask", "learning_rate": "${learning_rate}"}
        cfg.data = {"_target_": "helpers.toy_task.ToyDataModule"}
    return cfg


def test_train_writes_self_describing_checkpoints_and_plots(tmp_path: Path) -> None:
    result = train(toy_config(tmp_path, "learning_rate=0.05"))
    assert result.trainer.global_step == 6
    checkpoint = torch.load(result.last_checkpoint, weights_only=True)
    assert checkpoint["refrain"]["format_version"] == 1
    assert checkpoint["refrain"]["config"]["learning_rate"] == 0.05
    assert checkpoint["refrain"]["config"]["task"]["_target_"] == "helpers.toy_task.ToyRegressionTask"
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step=*.ckpt"))
    assert steps == ["step=00000003.ckpt", "step=00000006.ckpt"]
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))
    assert (tmp_path / "run" / "plots" / "loss_curves.png").stat().st_size > 1000
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert result.metrics["train/loss"] < 20


def test_resume_continues_from_the_checkpoint_step(tmp_path: Path) -> None:
    first = train(toy_config(tmp_path))
    resumed = train(toy_config(tmp_path, f"ckpt_path={first.last_checkpoint}", "trainer.max_steps=9"))
    assert resumed.trainer.global_step == 9
