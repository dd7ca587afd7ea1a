"""Composition of conf/ and the one-line errors for unknown keys and options."""

from __future__ import annotations

import pytest

from refrain.config import compose_config, config_keys, group_options, normalize_overrides, resolve_checked
from refrain.errors import RefrainInputError


def test_base_config_composes_with_defaults() -> None:
    cfg = compose_config([])
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.trainer.gradient_clip_val == cfg.gradient_clip_val
    assert "tensorboard" in cfg.logger
    assert cfg.get("task") is None and cfg.get("data") is None


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(RefrainInputError) as info:
        compose_config(["trainer.max_stesp=10"])
    message = str(info.value)
    assert message.startswith("trainer.max_stesp:") and "trainer.max_steps" in message and "\n" not in message


def test_unknown_top_level_key_suggests_closest() -> None:
    with pytest.raises(RefrainInputError, match="every_plot_step"):
        compose_config(["every_plot_steps=10"])


def test_unknown_group_option_lists_available() -> None:
    with pytest.raises(RefrainInputError) as info:
        compose_config(["logger=tensorbord"])
    assert "tensorboard" in str(info.value)


def test_several_loggers_can_be_selected() -> None:
    cfg = compose_config(["logger=[tensorboard,csv]"])
    assert set(cfg.logger) == {"tensorboard", "csv"}


def test_wandb_is_offline_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert compose_config(["logger=wandb"]).logger.wandb.offline is True
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert compose_config(["logger=wandb"]).logger.wandb.offline is False


def test_config_keys_walks_nested_paths() -> None:
    keys = set(config_keys(compose_config([])))
    assert {"trainer.max_steps", "callbacks.checkpoint.dirpath", "exp_name"} <= keys


def test_group_options_lists_yaml_files() -> None:
    assert {"tensorboard", "csv", "wandb"} <= set(group_options("logger"))


def test_a_group_set_to_null_is_dropped_even_when_a_recipe_selected_it() -> None:
    assert normalize_overrides(["repa=null", "model/dit=null", "exp_name=null"]) == [
        "~repa",
        "~model/dit",
        "exp_name=null",
    ]
    cfg = compose_config(["experiment=demo_dit", "repa=null"])
    assert cfg.get("repa") is None and cfg.data.teachers is None
    assert compose_config(["experiment=demo_dit"]).repa.teachers is not None


def test_cfg_job_with_repa_null_prints_the_config(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from refrain.cli.train import main

    main(["experiment=demo_dit", "repa=null", f"run_dir={tmp_path}", "--cfg", "job"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "exp_name: demo_dit" in out.out and "random_teachers" not in out.out


def test_dit_latent_channels_are_read_from_the_vae_bundle(tmp_path) -> None:
    from helpers.bundles import TINY_VAE

    from refrain.bundles.vae import save_vae_bundle
    from refrain.models.vae.oobleck import build_oobleck_vae

    bundle = save_vae_bundle(tmp_path / "vae", build_oobleck_vae(**TINY_VAE).autoencoder, {})
    cfg = compose_config(["experiment=demo_dit", f"vae_bundle={bundle}"])
    assert cfg.model.dit.config.latent_channels == TINY_VAE["latent_channels"] == 16
    assert (
        compose_config(["experiment=demo_dit"]).model.dit.config.latent_channels == 64
    )  # no bundle named yet
    with pytest.raises(RefrainInputError, match="manifest"):
        resolve_checked(compose_config(["experiment=demo_dit", f"vae_bundle={tmp_path}"]))
