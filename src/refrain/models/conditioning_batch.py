"""The batch operations every backbone's conditioning dataclass shares.

Each backbone reads different inputs (refrain's DiT: prompt states and phoneme ids; ACE-Step 1.5: Qwen3
states; DiffRhythm: a style vector; Stable Audio Open: T5 states and seconds), but the sampler and the
loss only need the same few things from all of them: whole-batch CFG drop flags, tiling for batched
guidance branches, moving to a device, and whether a sample has a usable context latent. Those live here
once, so a new backbone's conditioning is its fields, its ``validate`` and its ``cat``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any, Self

import torch
from torch import Tensor

from refrain.errors import RefrainInputError

DROP_FLAGS = ("drop_style", "drop_lyrics", "drop_context")


class BatchConditioning:
    """Mixin for a dataclass of per-sample tensors (batch first) with the three ``DROP_FLAGS`` fields.

    Subclasses also provide ``frame_mask`` (B, T) and, possibly None, ``context`` / ``context_mask``;
    one whose frame count is read from another field (refrain's lyrics ids) overrides ``batch_size`` and
    ``num_frames``.
    """

    drop_style: Tensor
    drop_lyrics: Tensor
    drop_context: Tensor
    frame_mask: Tensor
    context: Tensor | None
    context_mask: Tensor | None

    @property
    def batch_size(self) -> int:
        return int(self.frame_mask.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frame_mask.shape[-1])

    def _name(self) -> str:
        """The backbone's conditioning class (LoRA's ControlConditioning reports its base's fields)."""
        return next(c.__name__ for c in type(self).__mro__ if BatchConditioning in c.__bases__)

    def check_latent(self, latent: Tensor, fix: str) -> None:
        """One line when the latent's batch or frame count differs from this conditioning's (shapes only)."""
        b, t = self.batch_size, self.num_frames
        if latent.shape[0] != b or latent.shape[-1] != t:
            raise RefrainInputError(
                self._name(), f"latent shape {tuple(latent.shape)} does not match (B={b}, T={t})", fix
            )

    def check_shapes(self, expect: Mapping[str, tuple[int, ...]], fix: str) -> None:
        """One line naming the first field whose shape is not the expected one (a collate bug names it)."""
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise RefrainInputError(f"{self._name()}.{name}", f"shape {got} does not match {shape}", fix)

    def fill_drop_flags(self, batch: int, device: torch.device) -> None:
        """Default each unset drop flag to all False (called from ``__post_init__``)."""
        for name in DROP_FLAGS:
            if getattr(self, name) is None:
                setattr(self, name, torch.zeros(batch, dtype=torch.bool, device=device))

    def fill_defaults(self, batch: int, frames: int, device: torch.device) -> None:
        """What an unset field means (called from ``__post_init__``): every frame valid, nothing dropped, and
        a context latent given without a mask gives every frame."""
        if self.frame_mask is None:
            self.frame_mask = torch.ones(batch, frames, dtype=torch.bool, device=device)
        self.fill_drop_flags(batch, device)
        if self.context is not None and self.context_mask is None:
            self.context_mask = torch.ones(batch, 1, frames, dtype=self.context.dtype, device=device)

    def with_dropped(
        self, style: bool | None = None, lyrics: bool | None = None, context: bool | None = None
    ) -> Self:
        """Copy with whole-batch drop flags set (True/False) or kept (None); used for CFG branches."""
        updates = {
            name: torch.full_like(getattr(self, name), bool(value))
            for name, value in zip(DROP_FLAGS, (style, lyrics, context), strict=True)
            if value is not None
        }
        return replace(self, **updates)  # type: ignore[type-var]

    def _fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def repeat(self, n: int) -> Self:
        """Tile the batch n times ([b0, b1, b0, b1, ...]), like ``Tensor.repeat`` on dim 0; a per-row
        host-side tuple is tiled the same way, any other host-side value kept."""
        values = {
            name: value.repeat(n, *([1] * (value.dim() - 1)))
            if isinstance(value, Tensor)
            else value * n
            if isinstance(value, tuple)
            else value
            for name, value in self._fields().items()
        }
        return type(self)(**values)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Self:
        """Move to a device; ``dtype`` applies to floating tensors only (ids and masks keep theirs)."""
        values = {}
        for name, value in self._fields().items():
            if isinstance(value, Tensor):  # host-side hints (bools, tuples) stay on the host
                cast = dtype if (dtype is not None and value.is_floating_point()) else None
                value = value.to(device=device, dtype=cast)
            values[name] = value
        return type(self)(**values)

    def context_present(self) -> Tensor:
        """(B,) bool: the sample has a context latent with at least one given frame and is not dropped."""
        if self.context is None or self.context_mask is None:
            return torch.zeros_like(self.drop_context)
        given = (self.context_mask[:, 0] > 0) & self.frame_mask
        return given.any(dim=1) & ~self.drop_context
