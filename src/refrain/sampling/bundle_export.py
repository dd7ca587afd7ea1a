"""Training checkpoint -> DiT bundle, read with plain torch (no Lightning, no training code).

A DiT training checkpoint (refrain.tasks.dit_task.DiTTask) keeps the live DiT under ``model.*`` and,
when training kept one, its EMA under ``ema.shadow.*``; the resolved config and a format version sit
in ``checkpoint["refrain"]`` (refrain.tasks.callbacks.CheckpointMetadata). The bundle gets the EMA.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.bundle import VOCAB_NAME, save_dit_bundle, text_encoder_ref

# The checkpoint versions this exporter reads (refrain.tasks.checkpoint_io.FORMAT_VERSION, restated so
# exporting never imports Lightning; a test keeps the two equal).
CHECKPOINT_FORMAT_VERSIONS = (1,)


def training_weights(state_dict: Mapping[str, Tensor], use_ema: bool = True) -> tuple[dict[str, Tensor], str]:
    """The DiT weights in a DiTTask checkpoint: ``ema.shadow.*`` when kept (and wanted), else ``model.*``."""
    for prefix, source in (("ema.shadow.", "ema"), ("model.", "live")):
        if prefix == "ema.shadow." and not use_ema:
            continue
        weights = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if weights:
            return weights, source
    raise RefrainInputError(
        "checkpoint state_dict", "holds no DiT weights (no 'ema.shadow.*' or 'model.*' keys)",
        "pass a checkpoint written by DiT training (task=dit)",
    )  # fmt: skip


def export_dit_checkpoint(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    vae_bundle: str | Path | None = None,
    phoneme_vocab: str | Path | None = None,
    text_encoder_dir: str | Path | None = None,
    use_ema: bool = True,
    overwrite: bool = False,
) -> Path:
    """Training checkpoint -> DiT bundle. The VAE bundle, vocabulary and text encoder default to the ones
    the checkpoint's own config names (``vae_bundle``, ``dataset_path``/phoneme_vocab.json,
    ``text_encoder_dir``); pass them when the run's files have moved."""
    checkpoint = load_training_checkpoint(checkpoint_path)
    meta = checkpoint["refrain"]
    config = meta["config"]
    spec = (config.get("model") or {}).get("dit")
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise RefrainInputError(
            checkpoint_path, "its config has no model.dit constructor", "export a checkpoint of DiT training"
        )
    vae = vae_bundle or config.get("vae_bundle")
    if not vae:
        raise RefrainInputError(checkpoint_path, "its config names no vae_bundle", "pass --vae_bundle")
    if phoneme_vocab is None:
        dataset = config.get("dataset_path")
        if not dataset:
            raise RefrainInputError(
                checkpoint_path, "its config names no dataset_path", "pass --phoneme_vocab"
            )
        phoneme_vocab = Path(dataset) / VOCAB_NAME
    encoder_dir = text_encoder_dir if text_encoder_dir is not None else config.get("text_encoder_dir")
    max_length = int((config.get("data") or {}).get("text_max_length", 256))
    weights, source = training_weights(checkpoint.get("state_dict") or {}, use_ema)
    extra = {
        "weights_source": source,
        "shift": config.get("shift"),
        "checkpoint": {
            "path": str(Path(checkpoint_path).resolve()), "format_version": meta["format_version"],
            "global_step": checkpoint.get("global_step"), "epoch": checkpoint.get("epoch"),
        },
    }  # fmt: skip
    return save_dit_bundle(
        out_dir,
        weights,
        spec,
        vae,
        phoneme_vocab,
        text_encoder_ref(encoder_dir, max_length),
        config,
        extra,
        overwrite,
    )


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint read with plain torch (tensors only, no pickled code) and its refrain metadata checked."""
    path = Path(path)
    if not path.is_file():
        raise RefrainInputError(path, "checkpoint not found", "pass a .ckpt written by refrain-train")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a truncated or foreign file
        raise RefrainInputError(
            path,
            f"cannot read the checkpoint ({type(error).__name__})",
            "pass a .ckpt written by refrain-train",
        ) from None
    meta = checkpoint.get("refrain") if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise RefrainInputError(
            path, "has no refrain metadata (resolved config)", "export a checkpoint written by refrain-train"
        )
    version = meta.get("format_version")
    if version not in CHECKPOINT_FORMAT_VERSIONS:
        raise RefrainInputError(
            path, f"checkpoint format {version!r} is not one this exporter reads {CHECKPOINT_FORMAT_VERSIONS}",
            "export it with the refrain version that trained it",
        )  # fmt: skip
    return checkpoint
