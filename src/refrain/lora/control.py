"""The zero-initialised reference path of StemGen and singing2accompaniment (ControlNet-style).

A small encoder reads the latent of a reference (the song without the wanted stem, or the vocal stem)
plus an instrument label and adds two residuals to the frozen DiT's conditioning: a per-frame one to the
tokens that enter the first block (where aligned lyrics and the repaint context already enter) and a
per-song one to the vector that drives every block's adaLN modulation, so the label reaches all depths.
Both residuals leave through layers initialised to zero (ControlNet's "zero convolutions"): before the
first update the adapted model computes exactly what the base computes, and training starts from the
base's behaviour instead of from noise injected into it.

The path is attached to ``dit.conditioner`` as the submodule ``reference_control`` with a forward hook,
so no base module is renamed: base checkpoints and PEFT adapter keys stay valid, and PEFT trains and saves
the path as a ``modules_to_save`` entry of the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.lora.variants import ControlSpec
from refrain.models.dit.blocks import zero_linear
from refrain.models.dit.conditioning import DiTConditioning, EmbeddedConditioning
from refrain.models.dit.lyrics import ConvNeXtBlock1d

CONTROL_MODULE = "reference_control"
_EXTRA = ("reference", "reference_mask", "instrument", "drop_reference")


@dataclass
class ControlConditioning(DiTConditioning):
    """DiTConditioning plus a reference latent and an instrument label for the control path.

    ``reference_mask`` is 1 on frames where the reference is given; ``instrument`` is the label id
    (-1 = none); ``drop_reference`` switches the path off per sample (classifier-free dropout).
    """

    reference: Tensor | None = None  # (B, C, T)
    reference_mask: Tensor | None = None  # (B, 1, T)
    instrument: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) long
    drop_reference: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool

    def __post_init__(self) -> None:
        super().__post_init__()
        b, t, device = self.batch_size, self.num_frames, self.lyrics.device
        if self.reference is not None and self.reference_mask is None:
            self.reference_mask = torch.ones(b, 1, t, dtype=self.reference.dtype, device=device)
        if self.instrument is None:
            self.instrument = torch.full((b,), -1, dtype=torch.long, device=device)
        if self.drop_reference is None:
            self.drop_reference = torch.zeros(b, dtype=torch.bool, device=device)

    @classmethod
    def from_plain(cls, cond: DiTConditioning, **extras: Any) -> ControlConditioning:
        """``cond``'s fields plus the control fields in ``extras`` (reference, reference_mask, ...)."""
        values = {f.name: getattr(cond, f.name) for f in fields(DiTConditioning)}
        return cls(**values, **extras)

    def plain(self) -> DiTConditioning:
        return DiTConditioning(**{f.name: getattr(self, f.name) for f in fields(DiTConditioning)})

    def extras(self) -> dict[str, Tensor | None]:
        return {k: getattr(self, k) for k in _EXTRA}

    def validate(self, latent: Tensor | None = None) -> None:
        super().validate(latent)
        b, t = self.batch_size, self.num_frames
        for name, value, shape in (
            (
                "reference",
                self.reference,
                None if self.reference is None else (b, self.reference.shape[1], t),
            ),
            ("reference_mask", self.reference_mask, (b, 1, t)),
            ("instrument", self.instrument, (b,)),
            ("drop_reference", self.drop_reference, (b,)),
        ):
            if value is not None and tuple(value.shape) != shape:
                raise RefrainInputError(
                    f"ControlConditioning.{name}",
                    f"shape {tuple(value.shape)} does not match {shape}",
                    "crop the reference latent to the generated latent's frames",
                )

    def repeat(self, n: int) -> ControlConditioning:
        extras = {k: _tile(v, n) for k, v in self.extras().items()}
        return ControlConditioning.from_plain(self.plain().repeat(n), **extras)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ControlConditioning:
        extras = {}
        for k, value in self.extras().items():
            cast = dtype if (dtype is not None and value is not None and value.is_floating_point()) else None
            extras[k] = None if value is None else value.to(device=device, dtype=cast)
        return ControlConditioning.from_plain(self.plain().to(device, dtype), **extras)

    @classmethod
    def cat(cls, items: Sequence[DiTConditioning]) -> ControlConditioning:
        """Batch concatenation; plain items (or items without a reference) join with the path off."""
        plain = DiTConditioning.cat([c.plain() if isinstance(c, ControlConditioning) else c for c in items])
        device = plain.lyrics.device
        controls = [c if isinstance(c, ControlConditioning) else None for c in items]
        ref = next((c for c in controls if c is not None and c.reference is not None), None)
        labels, drops, refs, masks = [], [], [], []
        for c, control in zip(items, controls, strict=True):
            b = c.batch_size
            labels.append(
                control.instrument if control else torch.full((b,), -1, dtype=torch.long, device=device)
            )
            drops.append(
                control.drop_reference if control else torch.ones(b, dtype=torch.bool, device=device)
            )
            if ref is None or ref.reference is None or ref.reference_mask is None:
                continue
            if control is not None and control.reference is not None:
                refs.append(control.reference)
                masks.append(control.reference_mask)
            else:
                refs.append(ref.reference.new_zeros(b, ref.reference.shape[1], c.num_frames))
                masks.append(ref.reference_mask.new_zeros(b, 1, c.num_frames))
        return ControlConditioning.from_plain(
            plain,
            reference=torch.cat(refs) if refs else None,
            reference_mask=torch.cat(masks) if masks else None,
            instrument=torch.cat(labels),
            drop_reference=torch.cat(drops),
        )

    def reference_present(self) -> Tensor:
        """(B,) bool: a reference with at least one given valid frame, not dropped."""
        if self.reference is None or self.reference_mask is None:
            return torch.zeros_like(self.drop_reference)
        given = (self.reference_mask[:, 0] > 0) & self.frame_mask
        return given.any(dim=1) & ~self.drop_reference


def _tile(value: Tensor | None, n: int) -> Tensor | None:
    return None if value is None else value.repeat(n, *([1] * (value.dim() - 1)))


class ReferenceControl(nn.Module):
    """Reference latent + instrument label -> (frame residual (B, T, d), vector residual (B, d)).

    ``scale`` multiplies both residuals (the adapter scale at inference); ``fold_scale`` bakes it into
    the zero-initialised output layers when an adapter is merged.
    """

    def __init__(
        self,
        latent_channels: int,
        hidden_size: int,
        num_labels: int,
        width: int = 256,
        layers: int = 2,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.hidden_size = hidden_size
        self.num_labels = num_labels
        self.scale = 1.0
        self.proj_in = nn.Linear(latent_channels + 1, width)
        self.label = nn.Embedding(num_labels, width)
        self.blocks = nn.ModuleList(ConvNeXtBlock1d(width, kernel_size) for _ in range(layers))
        self.frame_out = zero_linear(nn.Linear(width, hidden_size))
        self.vector_out = zero_linear(nn.Linear(width, hidden_size))
        self.act = nn.SiLU()

    @classmethod
    def from_spec(cls, spec: ControlSpec, latent_channels: int, hidden_size: int) -> ReferenceControl:
        return cls(
            latent_channels, hidden_size, len(spec.instruments), spec.width, spec.layers, spec.kernel_size
        )

    def forward(self, cond: ControlConditioning) -> tuple[Tensor, Tensor]:
        dtype = self.proj_in.weight.dtype
        b, t = cond.batch_size, cond.num_frames
        labelled = (cond.instrument >= 0) & ~cond.drop_reference
        if bool((cond.instrument >= self.num_labels).any()):
            raise RefrainInputError(
                "instrument",
                f"label id {int(cond.instrument.max())} is outside the {self.num_labels} trained labels",
                "pass one of the instruments listed in the adapter's refrain_lora.json",
            )
        label = self.label(cond.instrument.clamp_min(0)) * labelled[:, None].to(dtype)
        present = cond.reference_present()
        frame_mask = cond.frame_mask.unsqueeze(-1).to(dtype)
        if cond.reference is not None:  # run even when every sample dropped it: DDP needs each parameter used
            mask = cond.reference_mask.to(dtype)
            feats = torch.cat([cond.reference.to(dtype) * mask, mask], dim=1).transpose(1, 2)
            h = self.proj_in(feats) + label[:, None]
            for block in self.blocks:
                h = block(h, frame_mask)
            frame = self.frame_out(h) * (present[:, None, None].to(dtype) * frame_mask)
        else:
            frame = torch.zeros(b, t, self.hidden_size, dtype=dtype, device=cond.lyrics.device)
        vector = self.vector_out(self.act(label)) * labelled[:, None].to(dtype)
        return frame * self.scale, vector * self.scale

    @torch.no_grad()
    def fold_scale(self) -> None:
        for layer in (self.frame_out, self.vector_out):
            layer.weight.mul_(self.scale)
            layer.bias.mul_(self.scale)
        self.scale = 1.0


def _add_control(module: nn.Module, args: tuple[Any, ...], output: EmbeddedConditioning) -> Any:
    """Forward hook on the DiT's conditioner: add the control residuals (only for ControlConditioning)."""
    cond = args[0] if args else None
    if not isinstance(cond, ControlConditioning):
        return None
    frame, vector = getattr(module, CONTROL_MODULE)(cond)
    return replace(
        output,
        frame=output.frame + frame.to(output.frame.dtype),
        vector=output.vector + vector.to(output.vector.dtype),
    )


def conditioner_of(dit: nn.Module) -> nn.Module:
    conditioner = getattr(dit, "conditioner", None)
    if not isinstance(conditioner, nn.Module):
        raise RefrainInputError(
            type(dit).__name__,
            "the backbone has no `conditioner` module to attach the reference path to",
            "use refrain's DiffusionTransformer as the base of StemGen/singing2accompaniment",
        )
    return conditioner


def attach_control(dit: nn.Module, spec: ControlSpec) -> ReferenceControl:
    """Add a fresh zero-initialised reference path to ``dit`` (idempotent for the same spec)."""
    conditioner = conditioner_of(dit)
    hidden, channels = int(dit.hidden_size), int(dit.latent_channels)
    existing = getattr(conditioner, CONTROL_MODULE, None)
    if existing is not None:
        found = control_modules(existing)[0]
        wanted = (channels, hidden, len(spec.instruments))
        if (found.latent_channels, found.hidden_size, found.num_labels) != wanted:
            raise RefrainInputError(
                "reference path",
                f"the model already carries one for (channels, hidden, labels) "
                f"{(found.latent_channels, found.hidden_size, found.num_labels)}, not {wanted}",
                "load one StemGen/singing2accompaniment adapter per base model",
            )
        return found
    param = next(dit.parameters())
    control = ReferenceControl.from_spec(spec, channels, hidden).to(param.device)
    conditioner.add_module(CONTROL_MODULE, control)
    conditioner.register_forward_hook(_add_control)
    return control


def control_modules(model: nn.Module) -> list[ReferenceControl]:
    """Every ReferenceControl inside ``model`` (PEFT keeps the original and one copy per adapter)."""
    return [m for m in model.modules() if isinstance(m, ReferenceControl)]
