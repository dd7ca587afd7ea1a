"""Editing modes as latent-space math: retake, repaint, extend, audio2audio, and the crossfade.

Latents are (B, C, T) with T latent frames; masks are True where frames are regenerated.
Everything here wraps ``sample`` with a different start state, start step, or per-step reset,
so every solver and every guided velocity works in every mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.schedules import start_index_for_sigma
from refrain.sampling.solvers import StepCallback, VelocityFn, sample


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise RefrainInputError(name, f"must be in [0, 1], got {value}", f"pass a {name} between 0 and 1")


def retake_noise(seed_noise: Tensor, new_noise: Tensor, variance: float) -> Tensor:
    """cos(theta) seed_noise + sin(theta) new_noise, theta = variance * pi / 2.

    The cos/sin mix keeps unit variance for independent Gaussians, so the result is still a
    valid starting noise; variance 0 gives ``seed_noise`` back bit for bit (cos 0 = 1, sin 0 = 0).
    """
    _check_unit("retake_variance", variance)
    theta = variance * math.pi / 2.0
    return math.cos(theta) * seed_noise + math.sin(theta) * new_noise


def frame_mask(num_frames: int, start_seconds: float, end_seconds: float, frame_rate: float) -> Tensor:
    """Bool (T,) mask, True on latent frames touching [start, end) seconds (floor start, ceil end)."""
    if end_seconds <= start_seconds or start_seconds < 0:
        raise RefrainInputError(
            "repaint_start/repaint_end",
            f"need 0 <= start < end, got {start_seconds} and {end_seconds}",
            "give the region to regenerate in seconds, start before end",
        )
    first = max(0, math.floor(start_seconds * frame_rate))
    last = min(num_frames, math.ceil(end_seconds * frame_rate))
    if first >= num_frames:
        raise RefrainInputError(
            "repaint_start",
            f"{start_seconds} s is past the end of the song ({num_frames / frame_rate:.2f} s)",
            "pick a start inside the song, or use extend to add time",
        )
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[first:last] = True
    return mask


def _broadcast_mask(mask: Tensor, x: Tensor) -> Tensor:
    """(T,), (B, T) or (B, 1, T) -> (B or 1, 1, T) bool, checked against x's frame count."""
    if mask.shape[-1] != x.shape[-1]:
        raise RefrainInputError(
            "repaint mask",
            f"covers {mask.shape[-1]} frames, latent has {x.shape[-1]}",
            "build it for this latent",
        )
    mask = mask.to(device=x.device, dtype=torch.bool)
    if mask.dim() == 1:
        return mask.view(1, 1, -1)
    if mask.dim() == 2:
        return mask.unsqueeze(1)
    return mask


def noised(x0: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """x_sigma = (1 - sigma) x0 + sigma noise; exactly x0 at sigma 0."""
    if sigma == 0.0:
        return x0.clone()
    return (1.0 - sigma) * x0 + sigma * noise


def repaint_start_index(num_steps: int, variance: float) -> int:
    """ACE-Step: start at step int(N (1 - variance)); variance 1 starts from pure noise."""
    _check_unit("repaint_variance", variance)
    return int(num_steps * (1.0 - variance))


def repaint(
    velocity_fn: VelocityFn,
    x_src: Tensor,
    noise: Tensor,
    mask: Tensor,
    sigmas: Tensor,
    variance: float = 1.0,
    solver: str = "euler",
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Regenerate the masked frames of ``x_src``; the rest ends equal to ``x_src`` bit for bit.

    Starts at step int(N (1 - variance)) from (1 - sigma) x_src + sigma noise. After every step
    the frames outside the mask are reset to (1 - sigma_next) x_src + sigma_next noise, so the
    model always sees the kept frames at the right noise level and the masked region grows
    to fit them; at sigma 0 the reset is x_src itself. ``callback`` runs after the reset.
    """
    keep = ~_broadcast_mask(mask, x_src)
    start = repaint_start_index(len(sigmas) - 1, variance)
    x = noised(x_src, noise, float(sigmas[start]))

    def reset(step_index: int, x_step: Tensor, sigma_next: float) -> Tensor:
        x_step = torch.where(keep, noised(x_src, noise, sigma_next), x_step)
        if callback is not None:
            replaced = callback(step_index, x_step, sigma_next)
            if replaced is not None:
                return replaced
        return x_step

    x = sample(velocity_fn, x, sigmas, solver, start_index=start, generator=generator, callback=reset)
    return torch.where(keep, x_src, x)


def extend_latent(x_src: Tensor, left_frames: int, right_frames: int) -> tuple[Tensor, Tensor]:
    """Zero-pad (B, C, T) on the time axis; returns (padded, mask) with mask True on the padding."""
    if left_frames < 0 or right_frames < 0 or left_frames + right_frames == 0:
        raise RefrainInputError(
            "extend",
            f"got left={left_frames}, right={right_frames} frames",
            "add a positive number of seconds",
        )
    padded = torch.nn.functional.pad(x_src, (left_frames, right_frames))
    mask = torch.ones(padded.shape[-1], dtype=torch.bool, device=x_src.device)
    mask[left_frames : left_frames + x_src.shape[-1]] = False
    return padded, mask


def extend(
    velocity_fn: VelocityFn,
    x_src: Tensor,
    noise: Tensor,
    left_frames: int,
    right_frames: int,
    sigmas: Tensor,
    solver: str = "euler",
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Add frames left/right of ``x_src``: pad, mask the padding, repaint with variance 1.

    ``noise`` (and the conditioning behind ``velocity_fn``) must already have the padded
    length T + left + right; the original frames come back unchanged in the middle.
    """
    padded, mask = extend_latent(x_src, left_frames, right_frames)
    if noise.shape != padded.shape:
        raise RefrainInputError(
            "extend noise",
            f"shape {tuple(noise.shape)} != padded {tuple(padded.shape)}",
            "draw it at the new length",
        )
    return repaint(
        velocity_fn, padded, noise, mask, sigmas, 1.0, solver, generator=generator, callback=callback
    )


def audio2audio_start(z_ref: Tensor, noise: Tensor, sigmas: Tensor, strength: float) -> tuple[Tensor, int]:
    """Start state and step index for audio2audio: sigma_max = 1 - strength, snapped to the grid.

    The grid point used is the first with sigma <= 1 - strength, and the state is noised to
    that exact sigma so the solver continues on its own grid. Strength 1 returns z_ref, 0 noise.
    """
    _check_unit("audio2audio_strength", strength)
    start = start_index_for_sigma(sigmas, 1.0 - strength)
    return noised(z_ref, noise, float(sigmas[start])), start


def audio2audio(
    velocity_fn: VelocityFn,
    z_ref: Tensor,
    noise: Tensor,
    sigmas: Tensor,
    strength: float,
    solver: str = "euler",
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Sample from a reference latent noised to 1 - strength (higher strength = closer to it)."""
    x, start = audio2audio_start(z_ref, noise, sigmas, strength)
    return sample(velocity_fn, x, sigmas, solver, start_index=start, generator=generator, callback=callback)


def crossfade_weights(num_samples: int, start: int, end: int, fade: int) -> Tensor:
    """Float (num_samples,) weight of the *new* audio: 0 outside [start, end), 1 inside.

    Raised-cosine ramps of ``fade`` samples sit just inside both edges (shortened if the region
    is short), so blending never touches a sample outside [start, end).
    """
    if not 0 <= start < end <= num_samples:
        raise RefrainInputError(
            "crossfade",
            f"need 0 <= start ({start}) < end ({end}) <= {num_samples}",
            "clip the region to the song",
        )
    weights = torch.zeros(num_samples, dtype=torch.float64)
    weights[start:end] = 1.0
    fade = max(0, min(fade, (end - start) // 2))
    if fade > 0:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(fade, dtype=torch.float64) + 1) / (fade + 1))
        if start > 0:
            weights[start : start + fade] = ramp
        if end < num_samples:
            weights[end - fade : end] = ramp.flip(0)
    return weights


def apply_crossfade(original: Tensor, generated: Tensor, weights: Tensor) -> Tensor:
    """Blend (..., samples) audio by ``weights``; samples with weight 0 are ``original`` bit for bit."""
    w = weights.to(device=original.device, dtype=original.dtype)
    blended = original + w * (generated - original)
    blended = torch.where(w == 1.0, generated, blended)
    return torch.where(w == 0.0, original, blended)
