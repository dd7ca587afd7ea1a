"""Gradient clipping under mixed precision with a fused optimizer.

Lightning's mixed-precision plugin refuses to clip whenever the optimizer unscales gradients inside its own
step (a fused AdamW), because under fp16 on CUDA the gradients still carry the GradScaler's factor when
clipping runs. bf16 (and CPU autocast) has no scaler: the gradients are the true ones and clipping them is
exactly what an fp32 run does. The DiT recipes train bf16-mixed with a fused AdamW and clipping
(``experiment=dit_repa``), so the task clips those itself; with a scaler the combination is refused before
the run starts (``check_fused_clipping``), since clipping scaled gradients would clip the wrong thing.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from refrain.errors import RefrainInputError


def unscales_in_step(optimizer: torch.optim.Optimizer) -> bool:
    """True for optimizers that take the GradScaler's factor inside ``step`` (torch's fused Adam/AdamW)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def clip_unscaled_gradients(
    plugin: Any, optimizer: torch.optim.Optimizer, clip_val: float | None, algorithm: str | None
) -> bool:
    """Clip where Lightning would refuse although the gradients are unscaled; False = Lightning's own path.

    That is mixed precision without a scaler and an optimizer that unscales in its step; ``algorithm`` is
    ``norm`` (default) or ``value``, as ``trainer.gradient_clip_algorithm``.
    """
    if not isinstance(plugin, MixedPrecision) or plugin.scaler is not None or not unscales_in_step(optimizer):
        return False
    if clip_val:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        # a str from a caller or Lightning's GradClipAlgorithmType from the Trainer (its str() is its name)
        if str(getattr(algorithm, "value", algorithm) or "norm").lower() == "value":
            torch.nn.utils.clip_grad_value_(parameters, clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(parameters, clip_val)
    return True


def check_fused_clipping(plugin: Any, clip_val: float | None, optimizer_factory: Any) -> None:
    """Refuse fp16 with a GradScaler + a fused optimizer + clipping in one line, before the first step."""
    fused = bool(getattr(optimizer_factory, "keywords", {}).get("fused"))
    if fused and clip_val and getattr(plugin, "scaler", None) is not None:
        raise RefrainInputError(
            "task.optimizer.fused",
            "a fused AdamW unscales fp16 gradients inside its step, after gradient clipping has to run",
            "set task.optimizer.fused=false for 16-mixed, or train with --precision bf16-mixed",
        )
