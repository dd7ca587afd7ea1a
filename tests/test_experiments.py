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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """make_world's songs, VAE and DiT bundle, plus a multitrack dataset and a DiT bundle over its vocabulary
    for the recipes that train on stem pairs."""
    from helpers.bundles import save_checkpoint
    from helpers.multitrack import write_songs
    from helpers.tiny_runs import TINY_DIT_OVERRIDES, make_world
    from omegaconf import OmegaConf

    from refrain.bundles.export import export_dit
    from refrain.data.multitrack import prepare_multitrack

    world = make_world(tmp_path_factory.mktemp("recipes"))
    root = world["root"]
    stems = root / "multitrack"
    prepare_multitrack(
        write_songs(root / "stems", count=4, seconds=1.6), stems, val_fraction=0.3, progress=False
    )
    spec = OmegaConf.to_container(compose_config(TINY_DIT_OVERRIDES).model.dit, resolve=True)
    checkpoint = save_checkpoint(root / "stems.ckpt", spec, world["vae"], stems, text_max_length=32)
    export_dit(checkpoint, root / "stems_dit", use_ema=False)
    return {**world, "multitrack": stems, "multitrack_dit": root / "stems_dit"}


# experiment=diffrhythm_lora trains on a DiffRhythm bundle and an imported DiffRhythm dataset, the whole way
# through trainer.py, in tests/models/backbones/test_diffrhythm_cli.py.
OWN_DATA_RECIPES = {"diffrhythm_lora"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(EXPERIMENTS) - OWN_DATA_RECIPES))
def test_every_recipe_trains_two_steps_at_tiny_size(
    name: str, world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through trainer.py with the recipe's own trainer settings (precision, clipping, optimizer): composing
    is not enough (experiment=dit_repa's bf16-mixed + fused AdamW + clipping once failed at the first step)."""
    from helpers.tiny_runs import TINY_DIT_OVERRIDES, common_overrides, step_flags, train_in_process

    selected = compose_config([f"experiment={name}"])
    model = selected.get("model") or {}
    stems = name in ("lora_stemgen", "lora_singing2accompaniment")  # stem pairs: the multitrack dataset
    dataset, bundle = (
        (world["multitrack"], world["multitrack_dit"]) if stems else (world["dataset"], world["dit"])
    )
    argv = [f"experiment={name}", "--dataset_path", str(dataset), *step_flags(2)]
    if model.get("vae") is not None:
        argv += ["model/vae=tiny", "data.crop_samples=16384", "data.val_items=1"]
    else:
        lora = "lora_config_path" in (selected.get("task") or {})
        argv += [
            "--vae_bundle",
            str(world["vae"]),
            "data.batch_size=2",
            "data.max_frames=32",
            "data.val_items=1",
        ]
        argv += (
            ["--checkpoint_dir", str(bundle)]
            if lora
            else [*TINY_DIT_OVERRIDES, "data.storage.text_max_length=32"]
        )
        if selected.get("repa") is not None:
            argv.append("repa=null")  # the teachers' own path is tested with tiny random teachers elsewhere
    argv += [
        "trainer.val_check_interval=null",
        "+trainer.limit_val_batches=1",
        "trainer.check_val_every_n_epoch=1",
    ]
    code, err = train_in_process([*argv, *common_overrides(tmp_path / "run")], capsys)
    assert code == 0, err[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
