"""Rectified flow matching for the DiT (sigma = 1 is noise).

x_sigma = (1 - sigma) x0 + sigma * noise, target v = noise - x0, plain velocity MSE (SD3 style) averaged
over the latent elements of valid frames only (ACE-Step trains on padding; this does not). Timesteps are
logit-normal, then shifted by sigma' = s sigma / (1 + (s - 1) sigma) (ACE-Step's ``--shift``, default 3),
which moves training towards the noisy end where a long song's structure is decided.

Classifier-free-guidance dropout is drawn per sample and independently for style, lyrics, context and
speaker, after the masked span is chosen (a span sample whose context is dropped is scored on every valid
frame, as plain generation). Masked-span training (with probability ``masked_span_prob`` per sample) hands part of the clean
latent to the model as context (latent + mask) and scores only the missing span, so repaint and extend
are trained abilities. Spans are taken over the valid prefix of each sample (collate pads on the right).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.velocity import VelocityModel


def shift_sigma(sigma: Tensor, shift: float) -> Tensor:
    """SD3/ACE-Step shift map; shift > 1 pushes sigma towards 1 (noise)."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_sigma(
    batch: int,
    shift: float = 3.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(batch,) noise levels: sigmoid of N(logit_mean, logit_std), then shifted."""
    u = torch.randn(batch, device=device, generator=generator) * logit_std + logit_mean
    return shift_sigma(torch.sigmoid(u), shift)


def add_noise(x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
    """x_sigma = (1 - sigma) x0 + sigma noise, sigma (B,) broadcast over (B, C, T)."""
    s = sigma.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - s) * x0 + s * noise


def masked_mse(pred: Tensor, target: Tensor, frame_mask: Tensor) -> Tensor:
    """Mean squared error over the (C x valid frames) elements; pred/target (B, C, T), mask (B, T)."""
    mask = frame_mask.to(torch.float32).unsqueeze(1)
    err = (pred.float() - target.float()).pow(2) * mask
    return err.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


@dataclass
class FlowMatchingOutput:
    """Named terms (``flow`` is the loss) and what REPA and logging need from the same forward pass."""

    terms: dict[str, Tensor]
    sigma: Tensor  # (B,)
    loss_mask: Tensor  # (B, T) frames the loss covered
    cond: DiTConditioning  # after CFG dropout and masked-span context
    hidden: Tensor | None = None  # (B, T, D) when return_hidden

    @property
    def loss(self) -> Tensor:
        return self.terms["flow"]


class FlowMatchingLoss:
    """Callable training objective: ``loss_fn(model, x0, cond) -> FlowMatchingOutput``."""

    def __init__(
        self,
        shift: float = 3.0,
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        drop_style_prob: float = 0.15,
        drop_lyrics_prob: float = 0.15,
        drop_context_prob: float = 0.1,
        drop_speaker_prob: float = 0.5,
        masked_span_prob: float = 0.3,
        span_min_fraction: float = 0.1,
        span_max_fraction: float = 0.9,
    ) -> None:
        probs = {
            "drop_style_prob": drop_style_prob,
            "drop_lyrics_prob": drop_lyrics_prob,
            "drop_context_prob": drop_context_prob,
            "drop_speaker_prob": drop_speaker_prob,
            "masked_span_prob": masked_span_prob,
        }
        for key, value in probs.items():
            if not 0.0 <= value <= 1.0:
                raise RefrainInputError(
                    f"loss.{key}", f"{value} is not a probability", "use a value in [0, 1]"
                )
        if shift <= 0:
            raise RefrainInputError(
                "shift", f"{shift} must be positive", "use 3.0 (ACE-Step) or 1.0 for no shift"
            )
        if not 0.0 < span_min_fraction <= span_max_fraction < 1.0:
            raise RefrainInputError(
                "loss.span_min_fraction/span_max_fraction",
                f"({span_min_fraction}, {span_max_fraction}) is not a range in (0, 1)",
                "use for example 0.1 and 0.9",
            )
        self.shift, self.logit_mean, self.logit_std = shift, logit_mean, logit_std
        self.drop_style_prob, self.drop_lyrics_prob = drop_style_prob, drop_lyrics_prob
        self.drop_context_prob, self.drop_speaker_prob = drop_context_prob, drop_speaker_prob
        self.masked_span_prob = masked_span_prob
        self.span_min_fraction, self.span_max_fraction = span_min_fraction, span_max_fraction

    def _rand(self, batch: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        return torch.rand(batch, device=device, generator=generator)

    def apply_dropout(
        self, cond: DiTConditioning, generator: torch.Generator | None = None
    ) -> DiTConditioning:
        """Per-sample, independent CFG dropout; existing drop flags are kept.

        The draws are made on the CPU (unless ``generator`` lives on the device) and copied over, so the
        host knows which rows it dropped: a conditioning with host-side drop hints (refrain's DiT) gets
        them, and its encoders skip those rows on a GPU without a device->host read.
        """
        b, dev = cond.batch_size, cond.frame_mask.device
        host = generator is None or generator.device.type == "cpu"
        draw_on = torch.device("cpu") if host else dev
        style, lyrics, context = (
            self._rand(b, draw_on, generator) < p
            for p in (self.drop_style_prob, self.drop_lyrics_prob, self.drop_context_prob)
        )
        updates: dict[str, Any] = {
            "drop_style": cond.drop_style | style.to(dev, non_blocking=True),
            "drop_lyrics": cond.drop_lyrics | lyrics.to(dev, non_blocking=True),
            "drop_context": cond.drop_context | context.to(dev, non_blocking=True),
        }
        if cond.speaker is not None:
            keep = (self._rand(b, draw_on, generator) >= self.drop_speaker_prob).to(dev, non_blocking=True)
            updates["speaker"] = cond.speaker * keep[:, None].to(cond.speaker.dtype)
        if host and {"host_dropped_style", "host_dropped_lyrics"} <= {f.name for f in fields(cond)}:
            for name, drawn in (("host_dropped_style", style), ("host_dropped_lyrics", lyrics)):
                known = getattr(cond, name) or (False,) * b  # drawn is a CPU tensor: no device read
                updates[name] = tuple(k or d for k, d in zip(known, drawn.tolist(), strict=True))
        return replace(cond, **updates)

    def apply_masked_span(
        self, x0: Tensor, cond: DiTConditioning, generator: torch.Generator | None = None
    ) -> tuple[DiTConditioning, Tensor]:
        """Give part of x0 as context for some samples; returns the new cond and the loss mask (B, T)."""
        b, t = cond.batch_size, cond.num_frames
        dev = x0.device
        lengths = cond.frame_mask.sum(dim=1)
        has_context = torch.zeros_like(cond.drop_context)
        if cond.context_mask is not None:  # a given reference (e.g. StemGen's) is kept, dropped or not
            has_context = ((cond.context_mask[:, 0] > 0) & cond.frame_mask).any(dim=1)
        eligible = (self._rand(b, dev, generator) < self.masked_span_prob) & ~has_context & (lengths >= 2)
        # "no sample eligible" is read on the host only where that is free: on an accelerator the span
        # math below runs anyway (an all-zero context mask is the same as no context) with no sync
        if self.masked_span_prob == 0.0 or (dev.type == "cpu" and not bool(eligible.any())):
            return cond, cond.frame_mask
        fraction = self.span_min_fraction + (self.span_max_fraction - self.span_min_fraction) * self._rand(
            b, dev, generator
        )
        span = (fraction * lengths).round().long().clamp(min=1)
        span = torch.minimum(span, lengths - 1)
        kind = self._rand(b, dev, generator)  # < 1/3: extend left, < 2/3: extend right, else: repaint inside
        inner_start = (self._rand(b, dev, generator) * (lengths - span + 1)).floor().long()
        start = torch.where(
            kind < 1 / 3, torch.zeros_like(span), torch.where(kind < 2 / 3, lengths - span, inner_start)
        )
        frames = torch.arange(t, device=dev)[None]
        in_span = (frames >= start[:, None]) & (frames < (start + span)[:, None]) & eligible[:, None]
        given = (cond.frame_mask & ~in_span & eligible[:, None]).to(x0.dtype).unsqueeze(1)
        context = x0 * given
        context_mask = given
        if cond.context is not None and cond.context_mask is not None:
            keep = ~eligible[:, None, None]
            context = torch.where(keep, cond.context.to(x0.dtype), context)
            context_mask = torch.where(keep, cond.context_mask.to(x0.dtype), context_mask)
        loss_mask = cond.frame_mask & torch.where(eligible[:, None], in_span, torch.ones_like(in_span))
        return replace(cond, context=context, context_mask=context_mask), loss_mask

    def __call__(
        self,
        model: VelocityModel,
        x0: Tensor,
        cond: DiTConditioning,
        noise: Tensor | None = None,
        sigma: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_hidden: bool = False,
    ) -> FlowMatchingOutput:
        """One training loss. ``noise``/``sigma`` override the random draws (tests, fixed validation)."""
        cond.validate(x0)
        b = x0.shape[0]
        cond, loss_mask = self.apply_masked_span(x0, cond, generator)
        cond = self.apply_dropout(cond, generator)
        # a span sample whose context is dropped is plain generation: score every valid frame
        loss_mask = torch.where(cond.drop_context[:, None], cond.frame_mask, loss_mask)
        if sigma is None:
            sigma = sample_sigma(b, self.shift, self.logit_mean, self.logit_std, x0.device, generator)
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        out = model(add_noise(x0, noise, sigma), sigma, cond, return_hidden=return_hidden)
        loss = masked_mse(out.velocity, noise - x0, loss_mask)
        return FlowMatchingOutput({"flow": loss}, sigma, loss_mask, cond, out.hidden)


def bin_edges(num_bins: int) -> list[tuple[float, float]]:
    """Equal-width sigma bins over [0, 1]."""
    return [(i / num_bins, (i + 1) / num_bins) for i in range(num_bins)]


@torch.no_grad()
def binned_flow_loss(
    model: VelocityModel,
    x0: Tensor,
    cond: DiTConditioning,
    bins: Sequence[tuple[float, float]] | int = 5,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Validation flow loss per sigma bin (no dropout, no masked span), keys ``flow_sigma_<lo>_<hi>``.

    Each bin draws sigma uniformly inside it; the same noise serves every bin, so bins differ only in
    the noise level. Per-bin values show where a model is weak (structure near 1, detail near 0).
    """
    edges = bin_edges(bins) if isinstance(bins, int) else list(bins)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    terms: dict[str, Tensor] = {}
    for lo, hi in edges:
        sigma = lo + (hi - lo) * torch.rand(x0.shape[0], device=x0.device, generator=generator)
        velocity = model(add_noise(x0, noise, sigma), sigma, cond).velocity
        terms[f"flow_sigma_{lo:.2f}_{hi:.2f}"] = masked_mse(velocity, noise - x0, cond.frame_mask)
    return terms
