"""Every recipe under conf/experiment/ composes and instantiates (data, task, trainer) with tiny overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from refrain.config import compose_config, conf_dir
from refrain.train import build_callbacks, build_loggers

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


def tiny_overrides(name: str, tmp_path: Path) -> list[str]:
    """Shrink whatever model groups the recipe selects to their tiny presets."""
    selected = compose_config([f"experiment={name}"])
    overrides = [
        f"experiment={name}",
        f"run_dir={tmp_path / name}",
        "dataset_path=" + str(tmp_path / "dataset"),
    ]
    model = selected.get("model") or {}
    overrides += [f"model/{part}=tiny" for part in ("vae", "dit") if model.get(part) is not None]
    return overrides


def test_there_are_experiments_to_check() -> None:
    assert EXPERIMENTS, "conf/experiment/ holds no recipe"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name: str, tmp_path: Path) -> None:
    cfg = compose_config(tiny_overrides(name, tmp_path))
    assert cfg.get("task") is not None and cfg.get("data") is not None, f"{name} selects no task/data"
    task = instantiate(cfg.task)
    datamodule = instantiate(cfg.data)
    loggers = build_loggers(cfg)
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=build_callbacks(cfg, bool(loggers)))
    assert sum(p.numel() for p in task.parameters()) > 0
    assert datamodule is not None and trainer is not None
