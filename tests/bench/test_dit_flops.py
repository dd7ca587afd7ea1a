"""bench/dit_flops.py counts every GEMM-like op a DiT step runs, whichever form the code writes it in."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

from refrain.models.dit.fused import swiglu_projection


def _dit_flops() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "dit_flops.py"
    spec = importlib.util.spec_from_file_location("dit_flops_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inplace_addmm_and_matrix_vector_products_are_counted() -> None:
    count = _dit_flops().count_flops
    a, b, c, v = torch.randn(6, 5), torch.randn(5, 4), torch.zeros(6, 4), torch.randn(5)
    assert count(lambda: torch.mm(a, b))[0] == 2 * 6 * 5 * 4
    assert count(lambda: c.clone().addmm_(a, b))[0] == 2 * 6 * 5 * 4
    assert count(lambda: torch.mv(a, v))[0] == 2 * 6 * 5
    assert count(lambda: torch.matmul(a, v))[0] == 2 * 6 * 5


def test_fused_swiglu_counts_what_the_stock_composition_counts() -> None:
    """The block's SwiGLU (two F-wide GEMMs, the input gradient accumulated with addmm_) does the work of
    diffusers' SwiGLU (one 2F-wide linear, chunk, silu); forward + backward must count the same FLOPs."""
    count = _dit_flops().count_flops
    x = torch.randn(2, 16, 8, requires_grad=True)
    w = torch.randn(24, 8, requires_grad=True)
    grad = torch.randn(2, 16, 12)

    def stock() -> None:
        a, gate = F.linear(x, w).chunk(2, dim=-1)
        (a * F.silu(gate)).backward(grad)

    def fused() -> None:
        swiglu_projection(x, w).backward(grad)

    expected = 3 * 2 * (2 * 16) * 8 * 24  # forward, input gradient, weight gradient
    assert count(stock)[0] == expected
    assert count(fused)[0] == expected
