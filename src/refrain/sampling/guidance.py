"""Classifier-free guidance variants as pure functions of conditional/unconditional velocities.

Conventions. ``v_cond`` is the fully conditioned velocity (style + lyrics), ``v_uncond`` the one
with both dropped. With separate style and lyrics scales a third pass ``v_no_lyrics`` (style
only) is used and the guided velocity is

    v = v_u + w_style (v_no_lyrics - v_u) + w_lyrics (v_full - v_no_lyrics)
      = v_full + (w_style - 1) d_style + (w_lyrics - 1) d_lyrics,
    d_style = v_no_lyrics - v_u,  d_lyrics = v_full - v_no_lyrics.

Equal scales reduce exactly to ordinary CFG. The second form is how APG and CFG-zero* compose
with two scales: APG transforms each direction on its own (own momentum buffer, own norm clip,
projection orthogonal to v_full), which equals single-scale APG whenever the clip does not
bind; CFG-zero* rescales v_u by alpha = <v_full, v_u> / ||v_u||^2 before forming d_style.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.apg_cpu import apg_scalars, apg_update, as_dtype, scalar_path_applies

DecayKind = Literal["none", "linear", "cosine"]
DECAYS: tuple[str, ...] = get_args(DecayKind)
DEFAULT_DIMS: tuple[int, ...] = (-2, -1)


def _reduce_dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.dim()))


def cfg(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """Plain classifier-free guidance: v_u + w (v_c - v_u)."""
    return torch.add(v_uncond, v_cond - v_uncond, alpha=scale)


def style_lyrics_cfg(
    v_full: Tensor, v_no_lyrics: Tensor, v_uncond: Tensor, style_scale: float, lyrics_scale: float
) -> Tensor:
    """Two-scale CFG: v_u + w_style (v_no_lyrics - v_u) + w_lyrics (v_full - v_no_lyrics)."""
    return v_uncond + style_scale * (v_no_lyrics - v_uncond) + lyrics_scale * (v_full - v_no_lyrics)


def cfg_zero_alpha(v_cond: Tensor, v_uncond: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-sample alpha = <v_c, v_u> / ||v_u||^2 (shape (B, 1, ..., 1)): the optimal rescale of v_u."""
    dims = _reduce_dims(v_cond)
    dot = (v_cond * v_uncond).sum(dim=dims, keepdim=True)
    norm_sq = (v_uncond * v_uncond).sum(dim=dims, keepdim=True)
    return dot / (norm_sq + eps)


def cfg_zero_star(
    v_cond: Tensor, v_uncond: Tensor, scale: float, step_index: int, zero_init_steps: int = 1
) -> Tensor:
    """CFG-zero*: zero velocity on the first ``zero_init_steps`` steps, then alpha v_u + w (v_c - alpha v_u).

    The zeroed first step keeps the initial noise untouched, which the CFG-zero* paper finds
    better than trusting the model's least accurate (highest-noise) velocity.
    """
    if step_index < zero_init_steps:
        return torch.zeros_like(v_cond)
    scaled_uncond = cfg_zero_alpha(v_cond, v_uncond) * v_uncond
    return scaled_uncond + scale * (v_cond - scaled_uncond)


@dataclass
class MomentumBuffer:
    """APG's running average: avg <- d + momentum * avg (momentum -0.75 damps oscillation across steps).

    Given a ``step_index``, the average advances once per step: a second evaluation in the same
    step (Heun's end-point slope) builds on the same previous average and replaces the first,
    so the momentum means the same thing for every solver.
    """

    momentum: float = -0.75
    running_average: Tensor | None = None
    previous: Tensor | None = None
    step_index: int | None = None

    def update(self, diff: Tensor, step_index: int | None = None) -> Tensor:
        if step_index is None or step_index != self.step_index:
            self.previous = self.running_average
        self.step_index = step_index
        if self.previous is None:
            self.running_average = diff
        else:
            self.running_average = torch.add(diff, self.previous, alpha=self.momentum)
        return self.running_average

    def reset(self) -> None:
        self.running_average = self.previous = self.step_index = None


def apg_direction(
    diff: Tensor,
    v_cond: Tensor,
    momentum: MomentumBuffer | None = None,
    norm_threshold: float = 2.5,
    eta: float = 0.0,
    dims: Sequence[int] = DEFAULT_DIMS,
    step_index: int | None = None,
) -> Tensor:
    """Momentum, norm clip and projection of a guidance direction ``diff`` (returns the update).

    The part of ``diff`` parallel to ``v_cond`` is what oversaturates at high scales, so it is
    kept only with weight ``eta`` (0 in ACE-Step); the clip bounds the step size per sample.
    """
    work_dtype = torch.float32 if diff.dtype in (torch.float16, torch.bfloat16) else diff.dtype
    d = as_dtype(diff, work_dtype)
    if momentum is not None:
        d = momentum.update(d, step_index)
    dims = tuple(dims)
    cond = as_dtype(v_cond, work_dtype)
    if scalar_path_applies(d, dims):
        return as_dtype(apg_update(d, cond, norm_threshold, eta), diff.dtype)
    # orthogonal + eta * parallel = d - (1 - eta) <d, u> u with u = cond / |cond|: one pass builds it
    # (the sampler runs this at every guided step; separate unit/parallel/orthogonal tensors cost four)
    cond_sq = cond.norm(p=2, dim=dims, keepdim=True).clamp_min(1e-12).square()
    coef = (d * cond).sum(dim=dims, keepdim=True).div_(cond_sq).mul_(eta - 1.0)
    update = torch.addcmul(d, cond, coef)
    if norm_threshold > 0:  # clipping d scales its projections by the same factor
        update.mul_(torch.clamp(norm_threshold / d.norm(p=2, dim=dims, keepdim=True), max=1.0))
    return as_dtype(update, diff.dtype)


def apg(
    v_cond: Tensor,
    v_uncond: Tensor,
    scale: float,
    momentum: MomentumBuffer | None = None,
    norm_threshold: float = 2.5,
    eta: float = 0.0,
    dims: Sequence[int] = DEFAULT_DIMS,
    step_index: int | None = None,
) -> Tensor:
    """Adaptive projected guidance: v_c + (w - 1) * orth(clip(momentum(v_c - v_u)))."""
    if (
        v_cond.shape[0] == 1
        and v_cond.dtype in (torch.float32, torch.float64)
        and scalar_path_applies(v_cond, dims)
    ):
        d = v_cond - v_uncond  # one song on the CPU: v_c (1 + a coef) + a d with a = (w - 1) clip, two ops
        if momentum is not None:
            d = momentum.update(d, step_index)
        ((coef, clip),) = apg_scalars(d, v_cond, norm_threshold, eta)
        weight = (scale - 1.0) * clip
        return torch.mul(v_cond, 1.0 + weight * coef).add_(d, alpha=weight)
    update = apg_direction(v_cond - v_uncond, v_cond, momentum, norm_threshold, eta, dims, step_index)
    return torch.add(v_cond, update, alpha=scale - 1.0)


@dataclass
class GuidanceSchedule:
    """Which steps get guidance (the middle fraction ``interval``) and how the scale decays there.

    Guided steps are ``[int(N (1 - g) / 2), int(N (1 + g) / 2))``; elsewhere the sampler uses the
    plain conditional velocity (one model pass). Inside the interval the scale goes from the
    requested value at the first guided step to ``min_scale`` at the last one, along
    ``decay``: "none" (constant), "linear", or "cosine" (half cosine: slow start, slow end).
    """

    num_steps: int
    interval: float = 1.0
    decay: DecayKind = "none"
    min_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise RefrainInputError("num_steps", f"must be >= 1, got {self.num_steps}", "use >= 1 step")
        if not 0.0 <= self.interval <= 1.0:
            raise RefrainInputError(
                "guidance_interval", f"must be in [0, 1], got {self.interval}", "use e.g. 0.5 or 1.0"
            )
        if self.decay not in DECAYS:
            raise RefrainInputError(
                "guidance_decay", f"unknown decay {self.decay!r}", f"use one of {', '.join(DECAYS)}"
            )

    @property
    def bounds(self) -> tuple[int, int]:
        start = int(self.num_steps * (1.0 - self.interval) / 2.0)
        end = int(self.num_steps * (1.0 + self.interval) / 2.0)
        return start, end

    def is_guided(self, step_index: int) -> bool:
        start, end = self.bounds
        return start <= step_index < end

    def decay_factor(self, step_index: int) -> float | None:
        """1 at the first guided step falling to 0 at the last; None outside the interval."""
        if not self.is_guided(step_index):
            return None
        start, end = self.bounds
        progress = (step_index - start) / (end - start - 1) if end - start > 1 else 0.0
        if self.decay == "linear":
            return 1.0 - progress
        if self.decay == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    def scale_at(self, step_index: int, scale: float) -> float | None:
        """The scale to use at this step, or None where guidance is off."""
        factor = self.decay_factor(step_index)
        if factor is None:
            return None
        return self.min_scale + (scale - self.min_scale) * factor


class Guidance(Protocol):
    """What ``GuidedVelocity`` needs from a guidance strategy (CFG, APG, CFGZeroStar or your own)."""

    def zero_velocity(self, step_index: int) -> bool:
        """True where the step should output zero velocity without calling the model."""
        ...

    def reset(self) -> None:
        """Forget state carried across steps (start of a new sampling run)."""
        ...

    def __call__(
        self,
        v_cond: Tensor,
        v_uncond: Tensor,
        scale: float,
        step_index: int,
        v_no_lyrics: Tensor | None = None,
        lyrics_scale: float | None = None,
    ) -> Tensor: ...


class GuidanceBase(ABC):
    """The shared shape of CFG, APG and CFG-zero*: the zeroed steps, the reset and the dispatch between the
    one-scale and the two-scale (style + lyrics) formula. A strategy writes only its two formulas."""

    def zero_velocity(self, step_index: int) -> bool:
        return False

    def reset(self) -> None:
        return None

    def __call__(
        self,
        v_cond: Tensor,
        v_uncond: Tensor,
        scale: float,
        step_index: int,
        v_no_lyrics: Tensor | None = None,
        lyrics_scale: float | None = None,
    ) -> Tensor:
        if self.zero_velocity(step_index):
            return torch.zeros_like(v_cond)
        if v_no_lyrics is None:
            return self.one_scale(v_cond, v_uncond, scale, step_index)
        lyrics = scale if lyrics_scale is None else lyrics_scale
        return self.two_scale(v_cond, v_no_lyrics, v_uncond, scale, lyrics, step_index)

    @abstractmethod
    def one_scale(self, v_cond: Tensor, v_uncond: Tensor, scale: float, step_index: int) -> Tensor:
        """The strategy's formula with one scale for the whole condition."""

    @abstractmethod
    def two_scale(
        self,
        v_full: Tensor,
        v_no_lyrics: Tensor,
        v_uncond: Tensor,
        style: float,
        lyrics: float,
        step_index: int,
    ) -> Tensor:
        """The strategy's formula with separate style and lyrics scales (three passes)."""


@dataclass
class CFG(GuidanceBase):
    """Classifier-free guidance as a strategy object (stateless)."""

    def one_scale(self, v_cond: Tensor, v_uncond: Tensor, scale: float, step_index: int) -> Tensor:
        return cfg(v_cond, v_uncond, scale)

    def two_scale(
        self,
        v_full: Tensor,
        v_no_lyrics: Tensor,
        v_uncond: Tensor,
        style: float,
        lyrics: float,
        step_index: int,
    ) -> Tensor:
        return style_lyrics_cfg(v_full, v_no_lyrics, v_uncond, style, lyrics)


@dataclass
class APG(GuidanceBase):
    """Adaptive projected guidance with momentum kept across steps (call ``reset`` between runs).

    The momentum advances once per step index, so Heun's two evaluations of a step share it.
    """

    norm_threshold: float = 2.5
    momentum: float = -0.75
    eta: float = 0.0
    dims: tuple[int, ...] = DEFAULT_DIMS
    buffers: list[MomentumBuffer] = field(default_factory=list)

    def reset(self) -> None:
        self.buffers = []

    def _buffer(self, index: int) -> MomentumBuffer:
        while len(self.buffers) <= index:
            self.buffers.append(MomentumBuffer(self.momentum))
        return self.buffers[index]

    def one_scale(self, v_cond: Tensor, v_uncond: Tensor, scale: float, step_index: int) -> Tensor:
        buffer = self._buffer(0)
        return apg(v_cond, v_uncond, scale, buffer, self.norm_threshold, self.eta, self.dims, step_index)

    def two_scale(
        self,
        v_full: Tensor,
        v_no_lyrics: Tensor,
        v_uncond: Tensor,
        style: float,
        lyrics: float,
        step_index: int,
    ) -> Tensor:
        guided = v_full
        for index, (diff, weight) in enumerate(
            ((v_no_lyrics - v_uncond, style), (v_full - v_no_lyrics, lyrics))
        ):
            update = apg_direction(
                diff, v_full, self._buffer(index), self.norm_threshold, self.eta, self.dims, step_index
            )
            guided = torch.add(guided, update, alpha=weight - 1.0)
        return guided


@dataclass
class CFGZeroStar(GuidanceBase):
    """CFG-zero*: optimised uncond rescale plus zero velocity on the first ``zero_init_steps`` steps."""

    zero_init_steps: int = 1

    def zero_velocity(self, step_index: int) -> bool:
        return step_index < self.zero_init_steps

    def one_scale(self, v_cond: Tensor, v_uncond: Tensor, scale: float, step_index: int) -> Tensor:
        return cfg_zero_star(v_cond, v_uncond, scale, step_index, self.zero_init_steps)

    def two_scale(
        self,
        v_full: Tensor,
        v_no_lyrics: Tensor,
        v_uncond: Tensor,
        style: float,
        lyrics: float,
        step_index: int,
    ) -> Tensor:
        scaled_uncond = cfg_zero_alpha(v_full, v_uncond) * v_uncond
        return style_lyrics_cfg(v_full, v_no_lyrics, scaled_uncond, style, lyrics)
