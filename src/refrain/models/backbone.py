"""The backbone contract: everything the task, the data path, the sampler, LoRA, FSDP and export need.

A backbone is an ``nn.Module`` that maps (noisy latent x (B, C, T), sigma (B,) with 1 = noise,
conditioning) to a ``VelocityOutput`` (v = noise - x0), and that describes itself with a
``BackboneSpec`` (property ``backbone_spec``). Callers read capabilities from the spec, never from a
backbone's internals, so refrain's own DiT, ACE-Step 1.5 and the next released models plug in the same
way; a capability a config asks for and the backbone lacks is a one-line ``RefrainInputError`` at
build time (``require``), never a silent skip.

Conventions every backbone meets (the conformance suite in tests/models checks them):

- latents cross the boundary as (B, C, T) in refrain's flow convention; a backbone whose native layout
  or time convention differs converts inside its ``forward`` (``latent_layout`` names the native one);
- ``noise(seed, frames)`` draws (1, C, T) starting noise from a CPU generator in the native layout, so
  a seed means the same song as in the backbone's reference pipeline;
- the conditioning type has ``cat`` (classmethod), ``repeat``, ``to``, ``validate``, ``with_dropped``,
  ``batch_size``, ``num_frames``, ``frame_mask``, ``context``/``context_mask`` and the drop flags the
  flow-matching loss sets; ``conditioning_from_batch(batch)`` builds it from a DiT batch;
- ``return_hidden=True`` gives the REPA hidden state (B, T, hidden_size), one token per latent frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.models.dit.velocity import VelocityOutput

CFG_DROPS = ("style", "lyrics", "context", "all")
"""Drop kinds: per input (style prompt, lyrics, context latent) or only the whole condition at once."""

_WRAPPER_ATTRS = ("model", "base_model", "module", "_orig_mod", "shadow")


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone can do and the defaults that go with it (all read through ``spec_of``)."""

    name: str
    latent_channels: int
    hidden_size: int
    repa_layer: int
    conditioning_type: type
    supports_context: bool
    cfg_drops: frozenset[str]
    fsdp_wrap: tuple[str, ...]
    latent_layout: str = "BCT"  # native layout of the released model: "BCT" or "BTC" (channels last)
    sampler_defaults: Mapping[str, Any] = field(default_factory=dict)  # SamplerOptions fields
    loss_preset: Mapping[str, Any] = field(default_factory=dict)  # FlowMatchingLoss arguments
    lora_root: str | None = None  # the submodule LoRA adapts (None = the whole backbone)
    bundle_class: str | None = None  # name in refrain.bundles.registry a bundle uses to rebuild it
    native_reference: bool = False  # its conditioning takes a whole reference track (``reference``) as
    # input, so StemGen/singing2accompaniment LoRAs use it instead of refrain's zero-initialised control path

    def __post_init__(self) -> None:
        unknown = set(self.cfg_drops) - set(CFG_DROPS)
        if unknown or self.latent_layout not in ("BCT", "BTC"):
            raise ValueError(
                f"backbone spec {self.name}: bad cfg_drops {unknown} or layout {self.latent_layout}"
            )


@runtime_checkable
class Backbone(Protocol):
    """The interface the task, sampler, LoRA and export call (see the module docstring)."""

    @property
    def backbone_spec(self) -> BackboneSpec: ...

    @property
    def latent_channels(self) -> int: ...

    def conditioning_from_batch(self, batch: Mapping[str, Any]) -> Any:
        """The backbone's conditioning object for a DiT batch (see refrain.data.dit_dataset)."""
        ...

    def noise(self, seed: int, frames: int) -> Tensor:
        """(1, C, frames) float32 starting noise for ``seed``, drawn in the native layout on the CPU."""
        ...

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None: ...

    def __call__(
        self, x: Tensor, sigma: Tensor, cond: Any, return_hidden: bool = False
    ) -> VelocityOutput: ...


def backbone_of(model: nn.Module) -> Any:
    """The backbone inside ``model``: follows LoRA (AdaptedDiT, PeftModel), DDP, compile and EMA wrappers."""
    seen: set[int] = set()
    current: Any = model
    while id(current) not in seen:
        seen.add(id(current))
        if "backbone_spec" in dir(type(current)):
            return current
        children = getattr(current, "_modules", {})
        inner = next((children[a] for a in _WRAPPER_ATTRS if a in children), None)
        if inner is None:
            break
        current = inner
    raise RefrainInputError(
        "model.dit",
        f"{type(model).__name__} does not declare a backbone_spec",
        "wrap the network in a backbone that meets refrain.models.backbone.Backbone",
    )


def spec_of(model: nn.Module) -> BackboneSpec:
    return backbone_of(model).backbone_spec


def require(model: nn.Module, capability: str, key: str, fix: str) -> None:
    """One-line error when the backbone lacks ``capability`` (``context`` or a CFG drop kind)."""
    spec = spec_of(model)
    if capability == "context":
        ok = spec.supports_context
    elif capability in CFG_DROPS:
        ok = capability in spec.cfg_drops
    else:
        raise ValueError(f"unknown capability {capability!r}")
    if not ok:
        what = "a context latent" if capability == "context" else f"dropping {capability} alone for CFG"
        raise RefrainInputError(key, f"backbone {spec.name} does not support {what}", fix)


def check_loss(model: nn.Module, loss: Any) -> None:
    """The loss's CFG drops must be drops the backbone has (ACE-Step 1.5 drops only the whole condition)."""
    spec = spec_of(model)
    if "lyrics" not in spec.cfg_drops and float(getattr(loss, "drop_lyrics_prob", 0.0)) > 0:
        raise RefrainInputError(
            "task.loss.drop_lyrics_prob",
            f"backbone {spec.name} only drops the whole condition",
            "set drop_lyrics_prob: 0 and drop the condition with drop_style_prob (the released recipe: "
            f"{spec.loss_preset.get('drop_style_prob', 0.15)})",
        )
    if not spec.supports_context and float(getattr(loss, "masked_span_prob", 0.0)) > 0:
        require(model, "context", "task.loss.masked_span_prob", "set masked_span_prob: 0 for this backbone")


def check_guidance(model: nn.Module, lyrics_scale: float | None) -> None:
    """Separate lyrics guidance needs a lyrics-only drop; say so before sampling starts."""
    if lyrics_scale is not None:
        require(model, "lyrics", "lyrics_guidance_scale", "leave lyrics_guidance_scale unset (one scale)")


def seeded_noise(seed: int, channels: int, frames: int, layout: str = "BCT") -> Tensor:
    """(1, C, T) Gaussian noise from a fresh CPU generator seeded with ``seed`` (see ``draw_noise``)."""
    return draw_noise(torch.Generator().manual_seed(int(seed)), channels, frames, layout)


def draw_noise(generator: torch.Generator, channels: int, frames: int, layout: str = "BCT") -> Tensor:
    """(1, C, T) Gaussian noise from ``generator``, drawn as (1, T, C) when the native layout is BTC."""
    if layout == "BTC":
        return torch.randn((1, frames, channels), generator=generator).transpose(1, 2).contiguous()
    return torch.randn((1, channels, frames), generator=generator)


def frames_to_tokens(hidden: Tensor, frames: int, patch: int) -> Tensor:
    """(B, T / patch, D) patch tokens -> (B, T, D): each latent frame gets its patch's token (for REPA)."""
    if patch == 1:
        return hidden[:, :frames]
    return hidden.repeat_interleave(patch, dim=1)[:, :frames]


def fsdp_unit_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The block classes FSDP should wrap for the backbone inside ``model`` (its spec's ``fsdp_wrap``).

    For an auto-wrap policy built from the run's model rather than from a class list in conf/trainer.
    """
    from hydra.utils import get_class

    spec = spec_of(next((m for m in model.modules() if "backbone_spec" in dir(type(m))), model))
    classes = {get_class(path) for path in spec.fsdp_wrap}
    if not all(isinstance(c, type) and issubclass(c, nn.Module) for c in classes):
        raise RefrainInputError(
            f"backbone {spec.name}: fsdp_wrap", "names a non-module class", "name block classes"
        )
    return classes
