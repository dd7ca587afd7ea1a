"""ACE-Step 1.5's conditioning as one batch object (the ``conditioning_type`` of its backbone).

What the released condition encoder consumes, before it runs: Qwen3 last hidden states of the SFT prompt
(``# Instruction / # Caption / # Metas``), Qwen3 *token embeddings* of the lyric prompt
(``# Languages / # Lyric``; the lyric encoder contextualises them), and reference latents for the timbre
token (None = the silence latent the release ships). ``context``/``context_mask`` follow refrain's
convention (mask 1 where a frame is *given*); the backbone turns them into ACE-Step's
``context_latents`` (chunk mask 1 where a frame is *generated*). ``reference`` is the other kind of
context the release reads: a whole track given on every frame while every frame is generated (its
``lego``/``complete`` tasks; see ``ace15_tasks``); a sample has one kind or none.

ACE-Step 1.5 was trained dropping the whole condition, so there is one CFG switch, ``drop_style``
(the whole condition becomes the learned null embedding); ``drop_lyrics`` may only be set together with
it, and ``validate`` says so in one line. ``drop_context`` removes the context latent or the reference (text2music).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.models.conditioning_batch import DROP_FLAGS, BatchConditioning

_SEQUENCES = (("style", "style_mask"), ("lyrics", "lyrics_mask"))


@dataclass
class AceStepConditioning(BatchConditioning):
    """A batch: B items, S prompt tokens, L lyric tokens, T latent frames, D Qwen3 width, C latent channels."""

    style: Tensor  # (B, S, D) Qwen3 last hidden states of the SFT prompt
    style_mask: Tensor  # (B, S) bool
    lyrics: Tensor  # (B, L, D) Qwen3 input embeddings of the lyric prompt
    lyrics_mask: Tensor  # (B, L) bool
    frame_mask: Tensor  # (B, T) bool, True = valid frame
    timbre: Tensor | None = None  # (B, R, C) reference latents, channels last; None = silence latent
    context: Tensor | None = None  # (B, C, T) source latent
    context_mask: Tensor | None = None  # (B, 1, T), 1 = frame given
    speaker: Tensor | None = None  # always None: ACE-Step 1.5 has no speaker input (the loss reads it)
    drop_style: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool: whole condition
    drop_lyrics: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool: only with drop_style
    drop_context: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool
    reference: Tensor | None = None  # (B, C, T) whole reference track (lego/complete): given, all generated

    def __post_init__(self) -> None:
        batch, device = self.frame_mask.shape[0], self.frame_mask.device
        self.fill_defaults(batch, self.num_frames, device)

    @property
    def dropped(self) -> Tensor:
        """(B,) bool: the sample gets the null condition."""
        return self.drop_style

    def validate(self, latent: Tensor | None = None) -> None:
        b, t = self.batch_size, self.num_frames
        if latent is not None:
            self.check_latent(latent, "build the conditioning for the same batch and crop as the latent")
        expect = {
            "style_mask": (b, self.style.shape[1]),
            "lyrics_mask": (b, self.lyrics.shape[1]),
            "drop_style": (b,),
            "drop_lyrics": (b,),
            "drop_context": (b,),
        }
        if self.context is not None:
            expect["context"] = (b, self.context.shape[1], t)
            expect["context_mask"] = (b, 1, t)
        if self.reference is not None:
            expect["reference"] = (b, self.reference.shape[1], t)
        if self.timbre is not None:
            expect["timbre"] = (b, self.timbre.shape[1], self.timbre.shape[2])
        self.check_shapes(expect, "build every conditioning tensor from the same batch")
        if bool((self.drop_lyrics & ~self.drop_style).any()):
            raise RefrainInputError(
                "AceStepConditioning.drop_lyrics",
                "ACE-Step 1.5 cannot drop the lyrics alone",
                "drop the whole condition (drop_style) or nothing; use one guidance scale",
            )
        if self.reference is not None and self.context is not None:
            raise RefrainInputError(
                "AceStepConditioning.reference",
                "a sample cannot take a reference track and a repaint context at once",
                "give one kind of context (a reference-path LoRA trains with task.loss.masked_span_prob=0)",
            )

    @classmethod
    def cat(cls, items: Sequence[AceStepConditioning]) -> AceStepConditioning:
        """Concatenate along the batch; token sequences are right-padded with zeros and a False mask.

        A missing context becomes an all-zero mask (nothing given) and a missing timbre the silence latent,
        which is what each means on its own; timbre lengths must agree (the timbre encoder has no mask).
        """
        if not items:
            raise RefrainInputError("AceStepConditioning.cat", "empty list", "pass at least one conditioning")
        out: dict[str, Tensor | None] = {}
        for name, mask in _SEQUENCES:
            length = max(getattr(c, name).shape[1] for c in items)
            out[name] = torch.cat(
                [F.pad(getattr(c, name), (0, 0, 0, length - getattr(c, name).shape[1])) for c in items]
            )
            out[mask] = torch.cat(
                [F.pad(getattr(c, mask), (0, length - getattr(c, mask).shape[1])) for c in items]
            )
        for name in ("frame_mask", *DROP_FLAGS):
            out[name] = torch.cat([getattr(c, name) for c in items])
        out["context"] = out["context_mask"] = out["timbre"] = None
        ref = next((c for c in items if c.context is not None), None)
        if ref is not None:
            assert ref.context is not None and ref.context_mask is not None
            out["context"] = torch.cat(
                [
                    c.context
                    if c.context is not None
                    else ref.context.new_zeros(c.batch_size, ref.context.shape[1], c.num_frames)
                    for c in items
                ]
            )
            out["context_mask"] = torch.cat(
                [
                    c.context_mask
                    if c.context_mask is not None
                    else ref.context_mask.new_zeros(c.batch_size, 1, c.num_frames)
                    for c in items
                ]
            )
        if any(c.timbre is not None for c in items):
            if any(c.timbre is None for c in items):
                raise RefrainInputError(
                    "AceStepConditioning.cat",
                    "some items have reference latents and some do not",
                    "give every item a timbre reference or none",
                )
            out["timbre"] = torch.cat([c.timbre for c in items if c.timbre is not None])
        out["reference"] = _all_or_none(items, "reference", "give every item a reference track or none")
        return cls(**out)  # type: ignore[arg-type]


def _all_or_none(items: Sequence[AceStepConditioning], name: str, fix: str) -> Tensor | None:
    """The items' ``name`` tensors concatenated, None when none has one; a mix is refused in one line."""
    values = [getattr(c, name) for c in items]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise RefrainInputError("AceStepConditioning.cat", f"some items have a {name} and some do not", fix)
    return torch.cat(values)
