"""The one small interface between a flow-matching backbone and everything that drives it.

The training task and the sampler only ever call ``model(x, sigma, cond, return_hidden=...)`` and read
``model.latent_channels``, so another backbone (for example a wrapper around diffusers'
``AceStepTransformer1DModel`` for fine-tuning released weights) plugs in without touching either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from refrain.models.dit.conditioning import DiTConditioning


@dataclass
class VelocityOutput:
    """What a backbone returns.

    ``velocity`` is (B, C, T) in the sigma = 1 is noise convention (v = noise - x0); ``hidden`` is the
    (B, T, D) token state after the backbone's REPA block, present only when asked for.
    """

    velocity: Tensor
    hidden: Tensor | None = None


@runtime_checkable
class VelocityModel(Protocol):
    """Anything that maps (noisy latent, sigma, conditioning) to a velocity."""

    @property
    def latent_channels(self) -> int:
        """Channels C of the latent the model denoises."""
        ...

    def forward(
        self, x: Tensor, sigma: Tensor, cond: DiTConditioning, return_hidden: bool = False
    ) -> VelocityOutput:
        """x: (B, C, T) noisy latent at noise level sigma: (B,) in [0, 1]."""
        ...

    def __call__(
        self, x: Tensor, sigma: Tensor, cond: DiTConditioning, return_hidden: bool = False
    ) -> VelocityOutput: ...
