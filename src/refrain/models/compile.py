"""``--torch_compile`` for training and sampling: ``torch.compile`` of a backbone's repeated blocks.

Why the blocks and not the whole model: every block has the same code, so one compiled graph serves
all of them; the conditioning, the sampler and the loss (data-dependent shapes, host-side logic) stay
eager; and ``nn.Module.compile`` works in place, so parameter names, checkpoints, EMA copies and LoRA
injection see the same module tree as an eager run. Which blocks: the backbone's FSDP wrap classes
(``BackboneSpec.fsdp_wrap``), the one place a backbone names its repeated unit.

Where the platform cannot compile (no C++ compiler for the CPU backend, an unsupported Python or
accelerator), a tiny probe fails once and the caller gets a one-line note; the model runs eager.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from refrain.models.backbone import backbone_of, fsdp_unit_classes


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
    """Compile every block of ``model``'s backbone in place; returns a one-line note when it runs eager.

    ``mode``/``dynamic`` go to ``torch.compile`` (None: torch's defaults; shapes that change between
    calls, as training crops do, make torch recompile once with dynamic shapes).
    """
    try:
        classes = fsdp_unit_classes(backbone_of(model))
    except Exception:  # noqa: BLE001 - not a backbone (a VAE): nothing to compile by this rule
        classes = set()
    blocks = [m for m in model.modules() if classes and isinstance(m, tuple(classes))]
    if not blocks:
        return f"torch.compile: {type(model).__name__} declares no repeated blocks; it runs eager"
    reason = compile_unavailable()
    if reason is not None:
        return f"torch.compile unavailable here ({reason}); running eager"
    for block in blocks:
        block.compile(mode=mode, dynamic=dynamic)
    return None


def is_compiled(module: nn.Module) -> bool:
    """True when ``nn.Module.compile`` was applied to ``module`` (its calls go through the compiled graph)."""
    return getattr(module, "_compiled_call_impl", None) is not None
