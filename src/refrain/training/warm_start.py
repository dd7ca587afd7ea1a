"""A full fine-tune from an exported bundle: ``--checkpoint_dir BUNDLE`` without a LoRA JSON.

The run's model is built from its config as usual, then the bundle's weights are loaded into it strictly
(a model of another size is a one-line error naming the sizes that differ), before the task is built, so
the task's EMA copy starts from the same weights. A DiT bundle also brings its VAE (the latent space its
weights live in) unless ``vae_bundle`` is given, and the dataset's phoneme ids must extend the bundle's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn

from refrain.errors import RefrainInputError


def bundle_kind(path: str | Path) -> str:
    """``dit`` or ``vae``, from the bundle's manifest (a folder without one is a one-line error)."""
    manifest = Path(path) / "manifest.json"
    try:
        kind = json.loads(manifest.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind not in ("dit", "vae"):
        raise RefrainInputError(
            f"--checkpoint_dir {path}",
            "is not a refrain bundle (no readable manifest.json with a kind)",
            "pass a folder made by refrain-export, or --ckpt_path to resume a training checkpoint",
        )
    return str(kind)


def prepare_config(cfg: DictConfig) -> None:
    """Facts the bundle fixes, filled in before anything is instantiated: a DiT bundle's VAE."""
    from refrain.models.backbones.ace15 import is_release_folder

    if is_release_folder(cfg.checkpoint_dir):  # ACE-Step 1.5: model/dit=ace15 loads it (task_from_bundle)
        return
    if bundle_kind(cfg.checkpoint_dir) == "dit" and not cfg.get("vae_bundle"):
        with open_dict(cfg):
            cfg.vae_bundle = str(Path(cfg.checkpoint_dir) / "vae")


def bundle_state(path: str | Path, kind: str) -> dict[str, Tensor]:
    """The bundle's weights (hash-verified) as the state dict of the training model."""
    if kind == "dit":
        from safetensors.torch import load_file

        from refrain.bundles.dit import WEIGHTS_NAME, open_dit_bundle

        return load_file(str(open_dit_bundle(path).path / WEIGHTS_NAME))
    from refrain.bundles.vae import load_vae_bundle

    return load_vae_bundle(path).model.state_dict()


def _differences(model: nn.Module, state: dict[str, Tensor]) -> list[str]:
    own = model.state_dict()
    shapes = [
        f"{k} {list(own[k].shape)} here, {list(v.shape)} in the bundle"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = [f"{k} missing" for k in own if k not in state]
    extra = [f"{k} unexpected" for k in state if k not in own]
    return shapes + missing + extra


def load_into(model: nn.Module, path: str | Path, kind: str, config_key: str) -> None:
    """Copy the bundle's weights into ``model``; any key or shape difference is a one-line error."""
    state = bundle_state(path, kind)
    problems = _differences(model, state)
    if problems:
        raise RefrainInputError(
            f"--checkpoint_dir {path}",
            f"its weights do not fit {config_key} ({len(problems)} differences, "
            f"e.g. {'; '.join(problems[:2])})",
            f"select the {config_key} the bundle was trained with (its config.yaml names it)",
        )
    model.load_state_dict(state, strict=True)


def task_from_bundle(cfg: DictConfig) -> Any:
    """The run's task with its model holding the bundle's weights (all of them trainable)."""
    from refrain.models.vae.oobleck import OobleckVAE

    path = cfg.checkpoint_dir
    from refrain.models.backbones.ace15 import AceStep15, is_release_folder

    if is_release_folder(path):  # the release's weights are loaded by the model config itself
        model = instantiate(cfg.task.model)
        if not isinstance(model, AceStep15):
            raise RefrainInputError(
                f"--checkpoint_dir {path}",
                "is an ACE-Step 1.5 release folder but the run's model is not",
                "add model/dit=ace15 (or ace15_turbo) to the command line",
            )
        return instantiate(cfg.task, model=model)
    kind = bundle_kind(path)
    model = instantiate(cfg.task.model)
    wants = "vae" if isinstance(model, OobleckVAE) else "dit"
    if kind != wants:
        raise RefrainInputError(
            f"--checkpoint_dir {path}",
            f"is a {kind.upper()} bundle but this run trains a {wants.upper()}",
            f"pass a {wants.upper()} bundle, or a recipe that trains a {kind.upper()} (experiment=...)",
        )
    load_into(model, path, kind, f"model.{kind}")
    if kind == "dit":
        from refrain.lora.model import check_vocab_extends

        check_vocab_extends(path, cfg.get("dataset_path"))
    return instantiate(cfg.task, model=model)
