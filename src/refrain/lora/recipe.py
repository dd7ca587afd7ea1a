"""What a LoRA run takes from its base bundle, and the checks that run before anything is built.

ACE-Step's command line gives only ``--checkpoint_dir BASE_BUNDLE --lora_config_path X.json``. Setting
``lora_config_path`` selects the ``lora`` config group (``refrain.config.normalize_overrides``), which
Hydra composes like any other: conf/lora/default.yaml picks the DiT task and data and changes what a
LoRA run changes in them. Facts the base bundle fixes (its VAE, text encoder, prompt length, speaker
size) enter through the ``${refrain_base:${checkpoint_dir},KEY}`` resolver, so ``--cfg job`` prints the
run that trains and an explicit override still wins.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from refrain.errors import RefrainInputError
from refrain.lora.config import load_lora_spec

NEEDS_BASE = (
    "--checkpoint_dir",
    "a LoRA run needs the base DiT bundle it adapts",
    "pass --checkpoint_dir BASE_BUNDLE (a folder made by refrain-export)",
)
BASE_FACTS = ("vae_bundle", "text_encoder_dir", "text_max_length", "speaker_dim", "latent_channels")


def base_bundle_fact(bundle: str | None, key: str) -> Any:
    """One fact of the base DiT bundle (see ``BASE_FACTS``), read from its manifest without the weights."""
    if not bundle:
        raise RefrainInputError(*NEEDS_BASE)
    if key not in BASE_FACTS:
        raise RefrainInputError(
            f"refrain_base:{key}", "not a fact of a base bundle", f"use one of {BASE_FACTS}"
        )
    from refrain.bundles.dit import open_dit_bundle
    from refrain.models.backbones.ace15 import is_release_folder, release_fact

    if is_release_folder(bundle):  # ACE-Step 1.5 in diffusers' layout
        return release_fact(bundle, key)
    opened = open_dit_bundle(bundle, verify=False)
    encoder = opened.text_encoder
    if key == "vae_bundle":
        return str(opened.vae_path)
    if key == "text_encoder_dir":
        return encoder.path
    if key == "text_max_length":
        return int(encoder.max_length)
    if key == "latent_channels":
        return int(opened.manifest["latent_channels"])
    model = opened.manifest.get("model") or {}
    speaker = (model.get("config") or model).get("speaker_dim")
    return int(speaker) if speaker else None


def is_lora_run(cfg: DictConfig) -> bool:
    """A config composed with the lora group: its task reads the LoRA JSON."""
    task = cfg.get("task")
    return task is not None and "lora_config_path" in task


def check_lora_run(cfg: DictConfig) -> None:
    """One-line errors for a LoRA run that cannot start: bad JSON, no base bundle, no lora group."""
    if not cfg.get("lora_config_path"):
        return
    load_lora_spec(cfg.lora_config_path)  # bad JSON fails here, before anything is built
    if not cfg.get("checkpoint_dir"):
        raise RefrainInputError(*NEEDS_BASE)
    from refrain.bundles.dit import open_dit_bundle
    from refrain.models.backbones.ace15 import is_release_folder

    if not is_release_folder(cfg.checkpoint_dir):
        open_dit_bundle(cfg.checkpoint_dir, verify=False)
    if not is_lora_run(cfg):
        raise RefrainInputError(
            "lora_config_path",
            "is set but the lora config group is not selected",
            "add lora=default (trainer.py --lora_config_path selects it by itself)",
        )
