"""An ACE-Step 1.5 release folder in diffusers' layout: recognising it, checking it, and the facts a LoRA or
fine-tuning run reads from it (re-exported by ``refrain.models.backbones.ace15``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from refrain.models.backbones.common import check_release_layout, has_release_layout

LAYOUT = ("transformer", "condition_encoder", "text_encoder", "tokenizer", "vae")


def check_release_folder(root: str | Path) -> Path:
    """The folder, or a one-line error naming the first part of diffusers' layout it lacks."""
    return check_release_layout(
        root,
        LAYOUT,
        "pass --checkpoint_dir pointing at an ACE-Step 1.5 release folder in diffusers' layout",
        f"an ACE-Step 1.5 folder holds {', '.join(s + '/' for s in LAYOUT)}: download the diffusers release",
    )


def is_release_folder(root: str | Path | None) -> bool:
    """True for a folder in diffusers' ACE-Step 1.5 layout (what ``--checkpoint_dir`` may name)."""
    return has_release_layout(root, LAYOUT)


def release_fact(root: str | Path, key: str) -> Any:
    """What a LoRA or fine-tuning run takes from a release folder, in the keys of a base bundle's facts.

    The release has no refrain VAE bundle (write one with ``python -m refrain.cli.ace15 vae``) and no
    style-prompt encoder for refrain's data (its conditioning is built from the batch text by the backbone).
    """
    path = check_release_folder(root)
    if key == "latent_channels":
        config = json.loads((path / "transformer" / "config.json").read_text())
        return int(config.get("audio_acoustic_hidden_dim", 64))
    return {"vae_bundle": None, "text_encoder_dir": None, "text_max_length": 256, "speaker_dim": None}[key]
