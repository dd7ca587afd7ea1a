"""A loaded DiT training checkpoint -> DiT bundle (``refrain.bundles.export.export_dit`` reads the file).

A DiT training checkpoint (refrain.tasks.dit_task.DiTTask) keeps the live DiT under ``model.*`` and,
when training kept one, its EMA under ``ema.shadow.*``; the resolved config and a format version sit
in ``checkpoint["refrain"]`` (refrain.training.callbacks.CheckpointMetadata). The bundle gets the EMA,
and the VAE bundle, phoneme vocabulary and text encoder the run's config names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from refrain.bundles.dit import VOCAB_NAME, save_dit_bundle, text_encoder_ref
from refrain.bundles.registry import SPEC_KEY, canonical_spec
from refrain.errors import RefrainInputError


def training_weights(state_dict: Mapping[str, Tensor], use_ema: bool = True) -> tuple[dict[str, Tensor], str]:
    """The DiT weights in a DiTTask checkpoint: ``ema.shadow.*`` when kept (and wanted), else ``model.*``."""
    for prefix, source in (("ema.shadow.", "ema"), ("model.", "live")):
        if prefix == "ema.shadow." and not use_ema:
            continue
        weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if weights:
            return weights, source
    raise RefrainInputError(
        "checkpoint state_dict",
        "holds no DiT weights (no 'ema.shadow.*' or 'model.*' keys)",
        "pass a checkpoint written by DiT training (task=dit)",
    )


def dit_bundle_from_checkpoint(
    checkpoint: Mapping[str, Any],
    config: Mapping[str, Any],
    format_version: int,
    checkpoint_path: str | Path,
    out_dir: str | Path,
    vae_bundle: str | Path | None = None,
    phoneme_vocab: str | Path | None = None,
    text_encoder_dir: str | Path | None = None,
    use_ema: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the bundle of a loaded checkpoint and its resolved ``config``.

    The VAE bundle, vocabulary and text encoder default to the ones the config names (``vae_bundle``,
    ``dataset_path``/phoneme_vocab.json, ``text_encoder_dir``); pass them when the run's files moved.
    """
    spec = (config.get("model") or {}).get("dit")
    if not isinstance(spec, Mapping) or not {"_target_", SPEC_KEY} & set(spec):
        raise RefrainInputError(
            checkpoint_path, "its config has no model.dit constructor", "export a checkpoint of DiT training"
        )
    # The stored config is data: its model must be a registered constructor with plain arguments.
    spec = canonical_spec(spec, f"{checkpoint_path} config model.dit")
    vae = vae_bundle or config.get("vae_bundle")
    if not vae:
        raise RefrainInputError(checkpoint_path, "its config names no vae_bundle", "pass the VAE bundle")
    if phoneme_vocab is None:
        dataset = config.get("dataset_path")
        if not dataset:
            raise RefrainInputError(
                checkpoint_path, "its config names no dataset_path", "pass the dataset's phoneme_vocab.json"
            )
        phoneme_vocab = Path(dataset) / VOCAB_NAME
    encoder_dir = text_encoder_dir if text_encoder_dir is not None else config.get("text_encoder_dir")
    max_length = int((config.get("data") or {}).get("text_max_length", 256))
    weights, source = training_weights(checkpoint.get("state_dict") or {}, use_ema)
    extra = {
        "weights_source": source,
        "shift": config.get("shift"),
        "checkpoint": {
            "path": str(Path(checkpoint_path).resolve()),
            "format_version": int(format_version),
            "global_step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch"),
        },
    }
    ref = text_encoder_ref(encoder_dir, max_length)
    return save_dit_bundle(out_dir, weights, spec, vae, phoneme_vocab, ref, config, extra, overwrite)
