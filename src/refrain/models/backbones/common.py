"""What the wrappers of released models share: reading diffusers configs, switching gradient
checkpointing on the diffusers modules they hold, and refusing a latent of the wrong shape in one line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    """One line for a latent that is not (B, channels, T): ``where`` names the backbone, ``fix`` the encoding."""
    if x.dim() != 3 or x.shape[1] != channels:
        raise RefrainInputError(where, f"latent shape {tuple(x.shape)} is not (B, {channels}, T)", fix)
