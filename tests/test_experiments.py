"""Every recipe under conf/experiment/ composes and instantiates (data, task, trainer) with tiny overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.bundles import make_tiny_bundle

from refrain.config import compose_config, conf_dir
from refrain.training.run import build_run

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def base_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported DiT bundle (with its VAE bundle inside) for the recipes that start from one."""
    return make_tiny_bundle(tmp_path_factory.mktemp("experiments"))


def tiny_overrides(name: str, tmp_path: Path, base_bundle: Path) -> list[str]:
    """Shrink whatever model groups the recipe selects to their tiny presets and point at tiny inputs."""
    selected = compose_config([f"experiment={name}"])
    overrides = [
        f"experiment={name}",
        f"run_dir={tmp_path / name}",
        f"dataset_path={tmp_path / 'dataset'}",
        f"vae_bundle={base_bundle / 'vae'}",
    ]
    if "lora_config_path" in (
        selected.get("task") or {}
    ):  # LoRA recipes adapt the base; others would warm-start
        overrides.append(f"checkpoint_dir={base_bundle}")
        if not selected.get("lora_config_path"):  # a recipe for the user's own LoRA JSON
            overrides.append(f"lora_config_path={conf_dir().parent / 'lora_configs' / 'text2sample.json'}")
    model = selected.get("model") or {}
    overrides += [f"model/{part}=tiny" for part in ("vae", "dit") if model.get(part) is not None]
    return overrides


def test_there_are_experiments_to_check() -> None:
    assert {"vae_mp3", "dit_repa", "demo_vae", "demo_dit"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name: str, tmp_path: Path, base_bundle: Path) -> None:
    run = build_run(compose_config(tiny_overrides(name, tmp_path, base_bundle)))
    assert sum(p.numel() for p in run.task.parameters()) > 0
    assert run.datamodule is not None and run.trainer is not None


REPA_EXPERIMENTS = [
    name for name in EXPERIMENTS if compose_config([f"experiment={name}"]).get("repa") is not None
]


@pytest.mark.parametrize("name", REPA_EXPERIMENTS)
def test_repa_null_drops_the_teachers_and_still_resolves(
    name: str, tmp_path: Path, base_bundle: Path
) -> None:
    """README: `GROUP=null` drops a group a recipe selected; nothing else may still point into it."""
    from omegaconf import OmegaConf

    config = compose_config([*tiny_overrides(name, tmp_path, base_bundle), "repa=null"])
    resolved = OmegaConf.to_container(config, resolve=True)
    assert resolved.get("repa") is None and resolved["task"]["repa"] is None
