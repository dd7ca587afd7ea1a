"""Sigma grids for inference (sigma = 1 is pure noise, sigma = 0 is data).

ACE-Step's inference grid: sigmas spaced linearly from ``sigma_max`` (1) down to a small
``sigma_min`` (~0.003), pushed towards the noisy end by the same shift map used for training
timesteps, then a final 0 so the last step lands on clean latents.
"""

from __future__ import annotations

import torch
from torch import Tensor

from refrain.errors import RefrainInputError

DEFAULT_SHIFT = 3.0
DEFAULT_SIGMA_MIN = 0.003


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """sigma' = s * sigma / (1 + (s - 1) * sigma): keeps 0 and 1 fixed, spends more steps at high noise."""
    if shift <= 0:
        raise RefrainInputError("shift", f"must be > 0, got {shift}", "use a positive shift such as 3.0")
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def sigma_schedule(
    num_steps: int,
    shift: float = DEFAULT_SHIFT,
    sigma_min: float = DEFAULT_SIGMA_MIN,
    sigma_max: float = 1.0,
) -> Tensor:
    """The ``num_steps + 1`` sigmas of an inference run, float64, decreasing, ending at exactly 0.

    Step ``i`` moves the state from ``sigmas[i]`` to ``sigmas[i + 1]``. Float64 so that the
    grid's end points are exact (1.0 stays 1.0 under the shift) and every solver sees the
    same numbers on every device.
    """
    if num_steps < 1:
        raise RefrainInputError("num_steps", f"must be >= 1, got {num_steps}", "ask for at least one step")
    if not 0.0 <= sigma_min < sigma_max <= 1.0:
        raise RefrainInputError(
            "sigma_min/sigma_max",
            f"need 0 <= sigma_min < sigma_max <= 1, got {sigma_min} and {sigma_max}",
            "use sigma_min ~0.003 and sigma_max 1.0",
        )
    linear = torch.linspace(sigma_max, sigma_min, num_steps, dtype=torch.float64)
    shifted = shift_sigmas(linear, shift)
    return torch.cat([shifted, torch.zeros(1, dtype=torch.float64)])


def timesteps(sigmas: Tensor, scale: float = 1.0) -> Tensor:
    """The noise level each step evaluates the model at (all sigmas but the final 0), times ``scale``.

    refrain's models take sigma in [0, 1] (scale 1); scale 1000 gives diffusers-style timesteps.
    """
    return sigmas[:-1] * scale


def start_index_for_sigma(sigmas: Tensor, sigma: float) -> int:
    """First step whose starting sigma is <= ``sigma``: where a partially-noised start joins the grid.

    Choosing the first grid point at or below the request never adds more noise than asked;
    ``sigma = 0`` returns the last index (no steps left), ``sigma >= sigmas[0]`` returns 0.
    """
    values = sigmas.tolist()
    for index, value in enumerate(values):
        if value <= sigma:
            return index
    return len(values) - 1
