"""DiffRhythm's conditioning as one batch object (the ``conditioning_type`` of its backbone).

What DiffRhythm's DiT reads besides the noisy latent: a 512-d style vector per song (MuQ-MuLan's audio or
text embedding), frame-aligned lyric ids in DiffRhythm's own G2P vocabulary (0 = no token), the crop's
start as a fraction of the song (``start_frame / song_frames``), for the 6144-frame model the song's
end as a fraction of ``max_frames``, and a context latent (DiffRhythm's ``cond``: given frames, zeros
where audio is generated).

CFG, as the release: the negative branch of its sampler drops the lyrics and the context latent and uses
a *negative style vector* instead of the style. Here ``drop_style`` gives the negative style when one is
set (``negative_style``) and the zero vector otherwise (the release's training-time style drop);
``drop_lyrics`` zeroes the ids; a sample with both dropped also loses its context latent, as the
release's negative branch does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.models.conditioning_batch import DROP_FLAGS, BatchConditioning

_OPTIONAL = ("duration", "negative_style", "context", "context_mask")


@dataclass
class DiffRhythmConditioning(BatchConditioning):
    """A batch: B songs, T latent frames, C latent channels, D = 512 style width."""

    style: Tensor  # (B, D) MuQ-MuLan style vector
    lyrics: Tensor  # (B, T) long, DiffRhythm token ids placed from each sentence's start frame, 0 = none
    frame_mask: Tensor = field(default=None)  # type: ignore[assignment]  # (B, T) bool, True = valid
    start_time: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) crop start / song frames
    duration: Tensor | None = None  # (B,) song end frame / max_frames (6144-frame model only)
    negative_style: Tensor | None = None  # (B, D) used instead of ``style`` where ``drop_style``
    context: Tensor | None = None  # (B, C, T) source latent
    context_mask: Tensor | None = None  # (B, 1, T), 1 = frame given
    speaker: Tensor | None = None  # always None: DiffRhythm has no speaker input (the loss reads it)
    drop_style: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool
    drop_lyrics: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool
    drop_context: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool

    def __post_init__(self) -> None:
        batch, frames, device = self.lyrics.shape[0], self.lyrics.shape[-1], self.lyrics.device
        if self.start_time is None:
            self.start_time = torch.zeros(batch, device=device)
        self.fill_defaults(batch, frames, device)

    @property
    def batch_size(self) -> int:
        return int(self.lyrics.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.lyrics.shape[-1])

    def validate(self, latent: Tensor | None = None) -> None:
        """One-line error naming the first field whose shape disagrees with the batch."""
        b, t = self.batch_size, self.num_frames
        if latent is not None:
            self.check_latent(latent, "crop the latent and the placed lyric ids to the same frames")
        expect = {
            "style": (b, self.style.shape[-1]),
            "frame_mask": (b, t),
            "start_time": (b,),
            "drop_style": (b,),
            "drop_lyrics": (b,),
            "drop_context": (b,),
        }
        if self.duration is not None:
            expect["duration"] = (b,)
        if self.negative_style is not None:
            expect["negative_style"] = (b, self.style.shape[-1])
        if self.context is not None:
            expect["context"] = (b, self.context.shape[1], t)
            expect["context_mask"] = (b, 1, t)
        self.check_shapes(
            expect, "build every conditioning tensor from the same batch (style vectors are (B, 512))"
        )
        if not bool(self.frame_mask.any(dim=1).all()):
            raise RefrainInputError(
                "DiffRhythmConditioning.frame_mask", "a sample has no valid frame", "drop empty items"
            )

    @classmethod
    def cat(cls, items: Sequence[DiffRhythmConditioning]) -> DiffRhythmConditioning:
        """Concatenate along the batch (equal frame counts). A missing optional is filled with what it
        means on its own: no context = an all-zero mask, no negative style = the style's zero drop,
        no duration = a full window (1.0)."""
        if not items:
            raise RefrainInputError("DiffRhythmConditioning.cat", "empty list", "pass at least one item")
        for item in items:
            require_diffrhythm(item)
        out: dict[str, Tensor | None] = {}
        for name in ("style", "lyrics", "frame_mask", "start_time", *DROP_FLAGS):
            out[name] = torch.cat([getattr(c, name) for c in items])
        fill = {
            "duration": lambda c: c.start_time.new_ones(c.batch_size),
            "negative_style": lambda c: torch.zeros_like(c.style),
            "context": lambda c: _context_ref(items).new_zeros(
                c.batch_size, _context_ref(items).shape[1], c.num_frames
            ),
            "context_mask": lambda c: c.style.new_zeros(c.batch_size, 1, c.num_frames),
        }
        for name in _OPTIONAL:
            present = [getattr(c, name) is not None for c in items]
            out[name] = None
            if any(present):
                out[name] = torch.cat(
                    [getattr(c, name) if getattr(c, name) is not None else fill[name](c) for c in items]
                )
        return cls(**out)  # type: ignore[arg-type]

    def style_in_use(self) -> Tensor:
        """(B, D): the style, the negative style where dropped (if given), zeros where dropped otherwise."""
        dropped = self.drop_style[:, None]
        other = (
            torch.zeros_like(self.style)
            if self.negative_style is None
            else self.negative_style.to(self.style)
        )
        return torch.where(dropped, other, self.style)

    def context_in_use(self, like: Tensor) -> Tensor:
        """(B, C, T) context the DiT sees: given frames of the source latent, zeros elsewhere and when dropped."""
        if self.context is None or self.context_mask is None:
            return torch.zeros_like(like)
        keep = ~(self.drop_context | (self.drop_style & self.drop_lyrics))
        given = (self.context_mask > 0) & keep[:, None, None]
        return torch.where(given, self.context.to(like), torch.zeros_like(like))


def _context_ref(items: Sequence[DiffRhythmConditioning]) -> Tensor:
    ref = next(c.context for c in items if c.context is not None)
    assert ref is not None
    return ref


def require_diffrhythm(cond: object) -> None:
    """One line for a conditioning built for another backbone (a refrain DiT batch or LoRA path, say)."""
    if not isinstance(cond, DiffRhythmConditioning):
        raise RefrainInputError(
            "DiffRhythm conditioning",
            f"got a {type(cond).__name__}; DiffRhythm reads a style vector and its own lyric ids",
            "build it with DiffRhythm.conditioning_from_batch or prompt_conditioning (refrain-infer: --prompt STYLE.pt)",
        )
