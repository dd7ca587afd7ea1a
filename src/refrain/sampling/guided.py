"""Turn a conditional velocity model into a guided ``velocity_fn`` for the solvers.

All guidance passes of a step (conditional, style-only, unconditional) run as ONE forward
call on a batch stacked along dim 0: one kernel launch sequence instead of two or three,
which is where most of the sampler's wall time goes on small models.

A model with a ``prepare(cond)`` method (refrain's DiT) embeds the conditioning once per run, at the
first step, and gets the prepared object at every step: the lyric and style encoders and the context
embedding do not depend on sigma. With guidance on, the unguided steps' conditioning is the first rows
of the prepared guidance batch (``head``), so the encoders run once per run, not once per batch shape.
A model without ``prepare`` gets the plain conditioning every step.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from refrain.sampling.guidance import CFG, DecayKind, Guidance, GuidanceSchedule
from refrain.sampling.solvers import StepCallback, sample


class Conditioning(Protocol):
    """The part of ``refrain.models.dit.conditioning.DiTConditioning`` the sampler uses."""

    def with_dropped(
        self, style: bool | None = None, lyrics: bool | None = None, context: bool | None = None
    ) -> Conditioning: ...

    @classmethod
    def cat(cls, items: list[Any]) -> Conditioning: ...


def velocity_of(output: Any) -> Tensor:
    """Accept a bare tensor or a ``VelocityOutput`` (anything with a ``.velocity``)."""
    return output if isinstance(output, Tensor) else output.velocity


class GuidedVelocity:
    """``velocity_fn(x, sigma, step_index)`` for ``sample``: model + conditioning + guidance.

    ``model(x, sigma, cond)`` returns a velocity (or a VelocityOutput). With ``lyrics_scale``
    None the step uses two passes (cond, uncond) and ``scale`` is the CFG scale; with a
    ``lyrics_scale`` it uses three (full, style only, uncond) and ``scale`` is the style scale.
    Outside the schedule's guidance interval, or with ``guidance=None``, one conditional pass.
    The guidance state (APG momentum) resets when ``step_index`` goes backwards, i.e. at the
    start of a new run; call ``reset()`` to be explicit.
    """

    def __init__(
        self,
        model: Any,
        cond: Conditioning,
        guidance: Guidance | None = None,
        scale: float = 1.0,
        lyrics_scale: float | None = None,
        schedule: GuidanceSchedule | None = None,
    ) -> None:
        self.model = model
        self.cond = cond
        self.guidance = guidance if guidance is not None else CFG()
        self.enabled = guidance is not None
        self.scale = scale
        self.lyrics_scale = lyrics_scale
        self.schedule = schedule
        uncond = cond.with_dropped(style=True, lyrics=True)
        passes = [cond, uncond] if lyrics_scale is None else [cond, cond.with_dropped(lyrics=True), uncond]
        self.num_passes = len(passes)
        self.batched_cond = type(cond).cat(passes)
        self._last_step: int | None = None
        self._prepared: dict[str, Any] = {}

    def conditioning(self, which: str) -> Any:
        """``which``: "single" (one conditional pass) or "batched" (all guidance passes), prepared once."""
        if which not in self._prepared:
            prepare = getattr(self.model, "prepare", None)
            head = None
            if which == "single" and self.enabled and callable(prepare):
                head = getattr(self.conditioning("batched"), "head", None)  # the passes stack cond first
            if callable(head):
                self._prepared[which] = head(self.cond.batch_size)  # type: ignore[attr-defined]
            else:
                cond = self.cond if which == "single" else self.batched_cond
                self._prepared[which] = prepare(cond) if callable(prepare) else cond
        return self._prepared[which]

    def reset(self) -> None:
        self.guidance.reset()
        self._last_step = None

    def scales_at(self, step_index: int) -> tuple[float, float | None] | None:
        """(scale, lyrics_scale) for this step after interval and decay; None = unguided step."""
        if not self.enabled:
            return None
        if self.schedule is None:
            return self.scale, self.lyrics_scale
        scale = self.schedule.scale_at(step_index, self.scale)
        if scale is None:
            return None
        lyrics = None if self.lyrics_scale is None else self.schedule.scale_at(step_index, self.lyrics_scale)
        return scale, lyrics

    def __call__(self, x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        if self._last_step is not None and step_index < self._last_step:
            self.reset()
        self._last_step = step_index
        if self.enabled and self.guidance.zero_velocity(step_index):
            return torch.zeros_like(x)
        scales = self.scales_at(step_index)
        if scales is None:
            return velocity_of(self.model(x, sigma, self.conditioning("single")))
        k = self.num_passes
        # one song's sigma repeated as a stride-0 view: no copy between two model calls (sigma is read only)
        sigmas = sigma.expand(k) if sigma.shape == (1,) else torch.cat([sigma] * k)
        stacked = velocity_of(self.model(torch.cat([x] * k), sigmas, self.conditioning("batched")))
        parts = stacked.chunk(k)
        scale, lyrics_scale = scales
        if k == 2:
            return self.guidance(parts[0], parts[1], scale, step_index)
        return self.guidance(
            parts[0], parts[2], scale, step_index, v_no_lyrics=parts[1], lyrics_scale=lyrics_scale
        )


def sample_guided(
    model: Any,
    cond: Conditioning,
    noise: Tensor,
    sigmas: Tensor,
    solver: str = "euler",
    *,
    guidance: Guidance | None = None,
    scale: float = 1.0,
    lyrics_scale: float | None = None,
    interval: float = 1.0,
    decay: DecayKind = "none",
    min_scale: float = 1.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """text2music at the latent level in one call (what validation sampling during training uses)."""
    schedule = GuidanceSchedule(len(sigmas) - 1, interval, decay, min_scale)
    velocity = GuidedVelocity(model, cond, guidance, scale, lyrics_scale, schedule)
    return sample(velocity, noise, sigmas, solver, generator=generator, callback=callback)
