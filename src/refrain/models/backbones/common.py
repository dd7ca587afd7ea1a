"""What the wrappers of released models share: checking and reading a release folder in diffusers' layout,
switching gradient checkpointing on the diffusers modules they hold, and refusing a latent of the wrong
shape in one line."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from refrain.errors import RefrainInputError


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers config without its private keys (``_class_name``, ``_diffusers_version``, ...): the
    plain arguments ``from_config`` takes and a bundle's model spec stores."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def set_gradient_checkpointing(modules: Iterable[nn.Module], enabled: bool) -> None:
    """Turn diffusers' gradient checkpointing on or off for each module (off only where it is on)."""
    for module in modules:
        if enabled:
            module.enable_gradient_checkpointing()  # type: ignore[operator]
        elif module.is_gradient_checkpointing:
            module.disable_gradient_checkpointing()  # type: ignore[operator]


def check_latent_input(x: Tensor, channels: int, where: str, fix: str) -> None:
    """One line for a latent that is not (B, channels, T); ``where`` names the backbone."""
    if x.dim() != 3 or x.shape[1] != channels:
        raise RefrainInputError(where, f"latent shape {tuple(x.shape)} is not (B, {channels}, T)", fix)


def check_release_layout(
    root: str | Path | None, layout: Sequence[str], not_folder_fix: str, missing_fix: str
) -> Path:
    """The folder, or a one-line error: not a folder, or the first of ``layout[:2]`` (the two parts every
    use needs) without its ``config.json``."""
    path = Path(root) if root else None
    if path is None or not path.is_dir():
        raise RefrainInputError("checkpoint_dir", f"{root!r} is not a folder", not_folder_fix)
    for sub in layout[:2]:
        if not (path / sub / "config.json").is_file():
            raise RefrainInputError(path / sub, "missing (no config.json)", missing_fix)
    return path


def has_release_layout(root: str | Path | None, layout: Sequence[str]) -> bool:
    """True for a folder whose first two ``layout`` parts have their ``config.json``."""
    if not root:
        return False
    return all((Path(root) / sub / "config.json").is_file() for sub in layout[:2])


def vae_frame_rate(root: Path, default: float, sampling_rate: int, hop: int) -> float:
    """Latent frames per second of the release's ``vae/`` (sampling rate / product of its strides);
    ``default`` when it has no config, ``sampling_rate``/``hop`` for keys its config leaves out."""
    config = root / "vae" / "config.json"
    if not config.is_file():
        return default
    values = json.loads(config.read_text())
    return float(values.get("sampling_rate", sampling_rate)) / math.prod(
        values.get("downsampling_ratios", [hop])
    )


def resolve_repa_layer(repa_layer: int | None, layers: int, fix: str) -> int:
    """The transformer block REPA reads (None: a third of the way in, ACE-Step v1's 8 of 24), checked."""
    layer = max(1, layers // 3) if repa_layer is None else int(repa_layer)
    if not 1 <= layer <= layers:
        raise RefrainInputError(
            "model.dit.repa_layer", f"{layer} is outside [1, {layers}] transformer blocks", fix
        )
    return layer
