"""``--torch_compile`` for training, sampling and encoding: ``torch.compile`` of a model's repeated units.

Why the units and not the whole model: every unit has the same code, so one compiled graph serves
all of them; the conditioning, the sampler and the loss (data-dependent shapes, host-side logic) stay
eager; and ``nn.Module.compile`` works in place, so parameter names, checkpoints, EMA copies and LoRA
injection see the same module tree as an eager run. Which units: a backbone's FSDP wrap classes
(``BackboneSpec.fsdp_wrap``), the one place a backbone names its repeated unit; in an Oobleck VAE, its
Snake activations. A VAE's convolutions already run as single library kernels, but each Snake
(``x + sin(alpha x)^2 / beta``) is five elementwise passes forward and more backward over full-rate
audio: a third of the demo VAE's CPU training step, which inductor fuses into one loop each way
(bench/bench_vae_step.py prints the step time both ways).

Where the platform cannot compile (no C++ compiler for the CPU backend, an unsupported Python or
accelerator), a tiny probe fails once and the caller gets a one-line note; the model runs eager.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from refrain.models.backbone import backbone_of, fsdp_unit_classes


def _repeated_units(model: nn.Module) -> tuple[list[nn.Module], bool | None]:
    """The modules to compile and the ``dynamic`` setting they need (see the module doc)."""
    try:
        classes = fsdp_unit_classes(backbone_of(model))
    except Exception:  # noqa: BLE001 - not a backbone (a VAE): look for its activations below
        classes = set()
    if classes:
        return [m for m in model.modules() if isinstance(m, tuple(classes))], None
    from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d

    # Snakes differ in width and length: symbolic shapes give all of them one graph, not one each.
    return [m for m in model.modules() if isinstance(m, Snake1d)], True


@functools.cache
def compile_unavailable() -> str | None:
    """None where ``torch.compile`` works here, else why not (probed once per process on a tiny function)."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    try:
        probe = torch.compile(lambda x: torch.sin(x) * 2.0 + 1.0)
        probe(torch.ones(4))
    except Exception as error:  # noqa: BLE001 - any compiler failure means: run eager
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no message'}"[:160]
    return None


def compile_blocks(model: nn.Module, mode: str | None = None, dynamic: bool | None = None) -> str | None:
    """Compile every repeated unit of ``model`` in place; returns a one-line note when it runs eager.

    ``mode``/``dynamic`` go to ``torch.compile`` (None: torch's defaults, or what the units need;
    shapes that change between calls, as training crops do, make torch recompile once with dynamic shapes).
    """
    blocks, units_dynamic = _repeated_units(model)
    if not blocks:
        return f"torch.compile: {type(model).__name__} declares no repeated blocks; it runs eager"
    reason = compile_unavailable()
    if reason is not None:
        return f"torch.compile unavailable here ({reason}); running eager"
    for block in blocks:
        block.compile(mode=mode, dynamic=units_dynamic if dynamic is None else dynamic)
    return None


def is_compiled(module: nn.Module) -> bool:
    """True when ``nn.Module.compile`` was applied to ``module`` (its calls go through the compiled graph)."""
    return getattr(module, "_compiled_call_impl", None) is not None
