"""FlowEdit: change the prompt (lyrics, tags) of a song while keeping its melody and arrangement.

Inversion-free editing: instead of inverting the source to noise, walk an edit latent along
the *difference* between the target- and source-conditioned velocities, evaluated at noisy
copies of the source. Where both prompts agree the difference is zero, so whatever the
prompts share stays put.

Step counting follows FlowEdit: n counts steps from the clean end. With N steps, grid step i
has N - i steps left; it is an edit step when n_min_steps < N - i <= n_max_steps, skipped when
N - i > n_max_steps (too noisy to keep structure), and ordinary sampling of the target takes
over for the last n_min_steps steps. Presets are fractions of N (ACE-Step's defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.solvers import StepCallback, VelocityFn, randn_like_from, sample, sigma_batch


@dataclass(frozen=True)
class FlowEditPreset:
    """Fractions of the N steps: edit while the remaining steps n satisfy n_min N < n <= n_max N."""

    n_min: float
    n_max: float
    n_avg: int = 1


FLOWEDIT_PRESETS: dict[str, FlowEditPreset] = {
    "only_lyrics": FlowEditPreset(n_min=0.6, n_max=1.0),
    "remix": FlowEditPreset(n_min=0.2, n_max=0.4),
}


def flowedit_bounds(num_steps: int, n_min: float, n_max: float) -> tuple[int, int]:
    """Grid indices [first_edit, first_plain): edit steps, then plain target sampling to the end."""
    if not 0.0 <= n_min <= n_max <= 1.0:
        raise RefrainInputError(
            "edit_n_min/edit_n_max",
            f"need 0 <= n_min <= n_max <= 1, got {n_min} and {n_max}",
            "use a preset (only_lyrics 0.6/1.0, remix 0.2/0.4)",
        )
    first_edit = num_steps - int(num_steps * n_max)
    first_plain = num_steps - int(num_steps * n_min)
    return first_edit, first_plain


@torch.no_grad()
def flowedit(
    velocity_src: VelocityFn,
    velocity_tar: VelocityFn,
    x_src: Tensor,
    sigmas: Tensor,
    n_min: float,
    n_max: float,
    n_avg: int = 1,
    solver: str = "euler",
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Edit ``x_src`` from the source conditioning (``velocity_src``) to the target (``velocity_tar``).

    Edit steps: for n_avg fresh noises, z_src = (1 - sigma) x_src + sigma noise,
    z_tar = z_edit + z_src - x_src, and z_edit += (sigma_next - sigma) * mean(v_tar(z_tar) -
    v_src(z_src)). Then, if n_min > 0, z_tar is formed once more with fresh noise and sampled
    with ``velocity_tar`` and ``solver`` to sigma 0. Identical velocity functions leave the
    source unchanged (exactly so when n_min = 0: z_tar is formed as z_src + (z_edit - x_src), so
    it equals z_src bit for bit while nothing has moved). The edit phase is Euler, as in
    FlowEdit; ``solver`` applies to the plain phase. ``callback`` sees every step.
    """
    if n_avg < 1:
        raise RefrainInputError("edit_n_avg", f"must be >= 1, got {n_avg}", "average over at least one noise")
    values = sigmas.tolist()
    num_steps = len(values) - 1
    first_edit, first_plain = flowedit_bounds(num_steps, n_min, n_max)
    z_edit = x_src.clone()
    for index in range(first_edit, first_plain):
        sigma, sigma_next = values[index], values[index + 1]
        sigma_in = sigma_batch(x_src, sigma)
        delta = torch.zeros_like(x_src)
        for _ in range(n_avg):
            z_src = (1.0 - sigma) * x_src + sigma * randn_like_from(x_src, generator)
            z_tar = z_src + (z_edit - x_src)
            delta = delta + (velocity_tar(z_tar, sigma_in, index) - velocity_src(z_src, sigma_in, index))
        z_edit = z_edit + (sigma_next - sigma) * (delta / n_avg)
        if callback is not None:
            replaced = callback(index, z_edit, sigma_next)
            if replaced is not None:
                z_edit = replaced
    if first_plain >= num_steps:
        return z_edit
    sigma = values[first_plain]
    z_src = (1.0 - sigma) * x_src + sigma * randn_like_from(x_src, generator)
    z_tar = z_src + (z_edit - x_src)
    return sample(
        velocity_tar, z_tar, sigmas, solver, start_index=first_plain, generator=generator, callback=callback
    )


def get_preset(name: str) -> FlowEditPreset:
    """The preset called ``name`` (a new preset is one entry of ``FLOWEDIT_PRESETS``)."""
    if name not in FLOWEDIT_PRESETS:
        raise RefrainInputError(
            "edit_preset", f"unknown preset {name!r}", f"use one of {', '.join(FLOWEDIT_PRESETS)}"
        )
    return FLOWEDIT_PRESETS[name]


def flowedit_preset(
    velocity_src: VelocityFn,
    velocity_tar: VelocityFn,
    x_src: Tensor,
    sigmas: Tensor,
    preset: str,
    solver: str = "euler",
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """``flowedit`` with a named preset: "only_lyrics" (0.6, 1.0) or "remix" (0.2, 0.4)."""
    chosen = get_preset(preset)
    return flowedit(
        velocity_src,
        velocity_tar,
        x_src,
        sigmas,
        chosen.n_min,
        chosen.n_max,
        chosen.n_avg,
        solver,
        generator=generator,
        callback=callback,
    )
