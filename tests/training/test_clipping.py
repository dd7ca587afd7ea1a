"""Gradient clipping with a fused AdamW under mixed precision (refrain.training.clipping)."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities.enums import GradClipAlgorithmType

from refrain.errors import RefrainInputError
from refrain.training.clipping import check_fused_clipping, clip_unscaled_gradients, unscales_in_step


def optimizer_with_gradients(fused: bool) -> torch.optim.AdamW:
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.randn(8))]
    for w in weights:
        w.grad = 10.0 * torch.randn_like(w)
    return torch.optim.AdamW(weights, lr=1e-3, fused=fused)


def total_norm(optimizer: torch.optim.Optimizer) -> float:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def test_fused_adamw_is_the_optimizer_lightning_refuses_to_clip_for() -> None:
    assert unscales_in_step(optimizer_with_gradients(fused=True))
    assert not unscales_in_step(optimizer_with_gradients(fused=False))


def test_bf16_without_a_scaler_clips_a_fused_optimizer_by_norm_and_by_value() -> None:
    bf16 = MixedPrecision("bf16-mixed", "cpu")
    assert bf16.scaler is None
    optimizer = optimizer_with_gradients(fused=True)
    assert total_norm(optimizer) > 1.0
    assert clip_unscaled_gradients(bf16, optimizer, 0.5, "norm")
    assert total_norm(optimizer) == pytest.approx(0.5, rel=1e-4)

    for algorithm in ("value", GradClipAlgorithmType.VALUE):  # the Trainer hands over its enum
        optimizer = optimizer_with_gradients(fused=True)
        assert clip_unscaled_gradients(bf16, optimizer, 0.01, algorithm)
        assert max(float(p.grad.abs().max()) for p in optimizer.param_groups[0]["params"]) == pytest.approx(
            0.01
        )


def test_every_other_case_is_left_to_lightning_untouched() -> None:
    bf16 = MixedPrecision("bf16-mixed", "cpu")
    for plugin, fused in ((bf16, False), (Precision(), True)):
        optimizer = optimizer_with_gradients(fused=fused)
        before = total_norm(optimizer)
        assert not clip_unscaled_gradients(plugin, optimizer, 0.5, "norm")
        assert total_norm(optimizer) == before
    optimizer = optimizer_with_gradients(fused=True)
    before = total_norm(optimizer)
    assert clip_unscaled_gradients(bf16, optimizer, None, None)  # no clipping asked: nothing changes
    assert total_norm(optimizer) == before


def test_fp16_with_a_scaler_and_a_fused_adamw_is_refused_in_one_line() -> None:
    scaled = SimpleNamespace(scaler=object())
    fused = partial(torch.optim.AdamW, lr=1e-4, fused=True)
    with pytest.raises(RefrainInputError, match="task.optimizer.fused.*fused=false"):
        check_fused_clipping(scaled, 0.5, fused)
    check_fused_clipping(scaled, None, fused)  # no clipping
    check_fused_clipping(scaled, 0.5, partial(torch.optim.AdamW, lr=1e-4, fused=False))
    check_fused_clipping(MixedPrecision("bf16-mixed", "cpu"), 0.5, fused)  # bf16: no scaler
