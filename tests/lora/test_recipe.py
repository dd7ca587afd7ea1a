"""ACE-Step's LoRA command line and the lora_* recipes compose (in Hydra, nothing patched afterwards) into a
LoRA run over the base bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.bundles import fast_base_bundle
from hydra.utils import instantiate

from refrain.cli.train import translate_argv
from refrain.config import compose_config, conf_dir
from refrain.errors import RefrainInputError
from refrain.lora.recipe import check_lora_run

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.stem for p in (conf_dir() / "experiment").glob("lora_*.yaml"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fast_base_bundle(tmp_path_factory.mktemp("recipe"))


def test_acestep_flags_alone_make_a_lora_run(bundle: Path, tmp_path: Path) -> None:
    argv = [
        "--checkpoint_dir",
        str(bundle),
        "--lora_config_path",
        str(REPO / "lora_configs" / "stemgen.json"),
        "--dataset_path",
        str(tmp_path),
        "--exp_name",
        "x",
    ]
    cfg = compose_config(translate_argv(argv))
    check_lora_run(cfg)
    assert cfg.task._target_ == "refrain.tasks.lora_task.LoraTask"
    assert cfg.task.model._target_ == "refrain.lora.model.load_base_dit"
    assert cfg.data._target_ == "refrain.lora.data.LoraDataModule"
    assert cfg.task.loss.drop_style_prob == 0.15  # the DiT task's settings are kept underneath
    assert cfg.task.optimizer.betas == [0.8, 0.9] and cfg.task.ema is None
    assert cfg.vae_bundle == str(bundle / "vae") and cfg.data.storage.text_max_length == 48
    task = instantiate(cfg.task)
    assert task.spec.variant == "stemgen" and str(task.adapter_dir) == str(Path(cfg.run_dir) / "adapter")
    assert sum(p.numel() for p in task.parameters() if p.requires_grad) > 0


@pytest.mark.parametrize("name", RECIPES)
def test_lora_recipes_compose_and_instantiate(
    name: str, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the recipes' LoRA JSONs are found from any working directory
    cfg = compose_config(
        [
            f"experiment={name}",
            f"checkpoint_dir={bundle}",
            f"dataset_path={tmp_path}",
            f"run_dir={tmp_path / 'run'}",
        ]
    )
    check_lora_run(cfg)
    assert Path(cfg.lora_config_path).is_absolute() and Path(cfg.lora_config_path).is_file()
    task = instantiate(cfg.task)
    datamodule = instantiate(cfg.data)
    assert task.spec.variant == name.removeprefix("lora_") == datamodule.spec.variant
    assert cfg.trainer.max_steps > 0


def test_plain_runs_are_untouched_and_bad_lora_runs_fail_in_one_line(bundle: Path, tmp_path: Path) -> None:
    plain = compose_config(["experiment=demo_vae"])
    check_lora_run(plain)
    assert plain.task._target_ == "refrain.tasks.vae_task.VAETask" and "lora_config_path" not in plain.task
    spec = str(REPO / "lora_configs" / "rapmachine.json")
    with pytest.raises(RefrainInputError, match="needs the base DiT bundle"):
        check_lora_run(compose_config([f"lora_config_path={spec}"]))
    with pytest.raises(RefrainInputError, match="not a refrain bundle"):
        check_lora_run(compose_config([f"lora_config_path={spec}", f"checkpoint_dir={tmp_path}"]))
    bad = tmp_path / "bad.json"
    bad.write_text('{"r": -4}')
    with pytest.raises(RefrainInputError, match="r: -4 is not a positive integer"):
        check_lora_run(compose_config([f"lora_config_path={bad}", f"checkpoint_dir={bundle}"]))


def test_base_bundle_facts_come_through_the_resolver_and_explicit_values_win(
    bundle: Path, tmp_path: Path
) -> None:
    argv = [
        "--checkpoint_dir",
        str(bundle),
        "--lora_config_path",
        str(REPO / "lora_configs" / "text2sample.json"),
    ]
    cfg = compose_config(translate_argv(argv))
    assert cfg.vae_bundle == str(bundle / "vae") and cfg.data.vae_bundle == str(bundle / "vae")
    assert cfg.data.storage.text_max_length == 48 and cfg.data.speaker_dim is None
    explicit = compose_config(
        translate_argv([*argv, "--vae_bundle", str(tmp_path), "data.storage.text_max_length=16"])
    )
    assert explicit.data.vae_bundle == str(tmp_path) and explicit.data.storage.text_max_length == 16
