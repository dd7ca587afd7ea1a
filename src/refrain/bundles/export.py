"""Training checkpoint -> self-describing bundle (``refrain-export``), loadable without Lightning.

``refrain-export --kind vae --checkpoint exps/vae_mp3/checkpoints/last.ckpt --output bundles/vae``
writes the EMA weights in diffusers' format plus the resolved training config and a manifest (see
``refrain.bundles.vae``). Each kind of model registers one exporter in ``EXPORTERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from refrain.errors import RefrainInputError

CHECKPOINT_FORMAT_VERSION = 1
"""Version of the ``checkpoint["refrain"]`` metadata (the resolved config) that the trainer writes
(``refrain.training.callbacks``) and export reads; defined here so bundles never import training."""

Exporter = Callable[..., Path]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a Lightning checkpoint safely (``weights_only``); a missing/corrupt file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise RefrainInputError(path, "checkpoint not found", "pass a .ckpt file from <run_dir>/checkpoints")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise RefrainInputError(
            path, f"not a readable checkpoint ({type(error).__name__})", "pass another .ckpt"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise RefrainInputError(
            path, "not a Lightning checkpoint (no state_dict)", "pass a .ckpt written by refrain-train"
        )
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], int]:
    """The resolved config and format version the trainer's callback stored in ``checkpoint["refrain"]``."""
    meta = checkpoint.get("refrain")
    if not isinstance(meta, dict) or "config" not in meta:
        raise RefrainInputError(
            path,
            "carries no refrain metadata (resolved config)",
            "export a checkpoint written by refrain-train",
        )
    version = int(meta.get("format_version", 0))
    if version > CHECKPOINT_FORMAT_VERSION:
        raise RefrainInputError(
            path,
            f"checkpoint format version {version} is newer than this refrain understands ({CHECKPOINT_FORMAT_VERSION})",
            "upgrade refrain",
        )
    config = meta["config"]
    if isinstance(config, str):
        config = yaml.safe_load(config)
    return dict(config), version


def export_vae(checkpoint_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the EMA VAE of a ``VAETask`` checkpoint as a bundle at ``out_dir``; returns the bundle path."""
    from diffusers import AutoencoderOobleck

    from refrain.bundles.vae import save_vae_bundle

    checkpoint = load_checkpoint(checkpoint_path)
    config, version = checkpoint_config(checkpoint, checkpoint_path)
    vae_meta = checkpoint.get("refrain_vae")
    if not isinstance(vae_meta, dict) or "autoencoder_config" not in vae_meta:
        raise RefrainInputError(
            checkpoint_path,
            "is not a VAE training checkpoint",
            "pass a checkpoint of experiment=vae_mp3 or demo_vae",
        )
    prefix = "ema.shadow."
    state = {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    autoencoder = AutoencoderOobleck.from_config(vae_meta["autoencoder_config"])
    autoencoder.load_state_dict(state, strict=True)
    extra = {
        "weights": "ema",
        "ema_updates": int(checkpoint["state_dict"].get("ema.num_updates", torch.tensor(0))),
        "global_step": int(checkpoint.get("global_step", 0)),
        "checkpoint_format_version": version,
        "source_checkpoint": str(Path(checkpoint_path).resolve()),
    }
    return save_vae_bundle(out_dir, autoencoder, config, extra=extra, overwrite=overwrite)


def export_dit(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    vae_bundle: str | Path | None = None,
    phoneme_vocab: str | Path | None = None,
    text_encoder_dir: str | Path | None = None,
    use_ema: bool = True,
) -> Path:
    """Write a ``DiTTask`` checkpoint (EMA weights) as a DiT bundle for the sampler (``refrain.bundles.dit``).

    The VAE bundle is copied in, the dataset's phoneme vocabulary too, and the text encoder is referenced
    by package or folder plus a digest; by default all three are the ones the run's config names.
    """
    from refrain.bundles.dit_export import dit_bundle_from_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    config, version = checkpoint_config(checkpoint, checkpoint_path)
    return dit_bundle_from_checkpoint(
        checkpoint,
        config,
        version,
        checkpoint_path,
        out_dir,
        vae_bundle,
        phoneme_vocab,
        text_encoder_dir,
        use_ema,
        overwrite,
    )


EXPORTERS: dict[str, Exporter] = {"vae": export_vae, "dit": export_dit}
