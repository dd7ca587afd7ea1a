"""The DiT block's elementwise chains as autograd functions with hand-written backward passes.

Why: on a CPU (and in the memory-bound part of any step) the block's time outside its GEMMs and attention
goes to passes over (B, T, d) tensors. Composed from stock ops, an RMSNorm's backward takes about ten
such passes (one per autograd node: mul, mean, rsqrt, pow, the accumulation), the rotary embedding's
backward stacks and concatenates, and SwiGLU's ``chunk`` concatenates the two half-gradients into a
fresh (B, T, 2 F) tensor. Each function here computes its forward with exactly the ops it replaces
(diffusers' ``RMSNorm`` and ``apply_rotary_emb`` in the half-split layout, the SwiGLU of diffusers'
``FeedForward``), except that ``a * b + c`` becomes one ``addcmul`` (rounded once: outputs agree to float
rounding, within 1e-6), and its backward from the closed-form gradient in a few passes. Parameters stay
in the modules that own them, so checkpoints, LoRA targets and FSDP units are untouched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

_HALF = (torch.float16, torch.bfloat16)


def _acc(x: Tensor) -> torch.dtype:
    """The precision of the math: float32 for half, bfloat16 and float32 inputs (as diffusers computes),
    float64 kept for float64 (so a float64 gradcheck checks the formulas, not float32 rounding)."""
    return torch.promote_types(x.dtype, torch.float32)


def _inv_rms(x: Tensor, eps: float) -> Tensor:
    """1 / sqrt(mean(x^2) + eps) over the last dim, as diffusers' RMSNorm; mean(x^2) is taken as
    |x|^2 / d from one ``vector_norm`` pass (``pow`` + ``mean`` wrote and re-read an x-sized square;
    the two agree to float rounding)."""
    ss = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=_acc(x))
    return torch.rsqrt(ss.square_().div_(x.shape[-1]).add_(eps))


def _norm_backward(g: Tensor, n: Tensor, rstd: Tensor, dot: Tensor | None = None) -> Tensor:
    """d/dx of n = x * rstd given dL/dn = g: rstd * (g - n * mean(g * n)), in rstd's precision.

    ``dot``: mean(g * n) when the caller has it already. With g = grad * w (a weight or adaLN's 1 + scale,
    constant over the tokens) it is (grad * n) @ w / d, a matrix-vector product over the (grad * n) the
    weight's gradient needs anyway, instead of another multiply pass and a mean.
    """
    if dot is None:
        dot = (g * n).mean(-1, keepdim=True)
    return torch.addcmul(g, n, dot, value=-1.0).mul_(rstd)


class _RMSNorm(Function):
    """x * rsqrt(mean(x^2) + eps) [* weight]: diffusers' ``RMSNorm.forward`` (dtype rules included)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
        rstd = _inv_rms(x, eps)
        n = x * rstd
        if weight is None:
            out = n.to(x.dtype)
        else:
            if weight.dtype in _HALF:
                n = n.to(weight.dtype)
            out = n * weight
        ctx.save_for_backward(n, rstd, weight)
        ctx.x_dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        n, rstd, weight = ctx.saved_tensors
        g, nf = grad.to(rstd.dtype), n.to(rstd.dtype)
        grad_weight = dot = None
        if weight is not None:
            gn, w = g * nf, weight.to(rstd.dtype)
            if ctx.needs_input_grad[1]:
                grad_weight = gn.sum_to_size(weight.shape).to(weight.dtype)
            dot = torch.matmul(gn, w).unsqueeze(-1).div_(w.shape[-1])
            g = g * w
        return _norm_backward(g, nf, rstd, dot).to(ctx.x_dtype), grad_weight, None


class _ModulatedRMSNorm(Function):
    """adaLN: rms_norm(h) * (1 + scale) + shift, with an affine-free norm (DiT's modulated pre-norm)."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
        rstd = _inv_rms(h, eps)
        n = (h * rstd).to(h.dtype)
        scale1 = 1 + scale
        ctx.save_for_backward(n, rstd, scale1)
        ctx.meta = (h.dtype, shift.shape, shift.dtype, scale.shape, scale.dtype)
        return torch.addcmul(shift, n, scale1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        n, rstd, scale1 = ctx.saved_tensors
        h_dtype, shift_shape, shift_dtype, scale_shape, scale_dtype = ctx.meta
        g, nf = grad.to(rstd.dtype), n.to(rstd.dtype)
        grad_shift = g.sum_to_size(shift_shape).to(shift_dtype)
        gn, s1 = g * nf, scale1.to(rstd.dtype)
        grad_scale = gn.sum_to_size(scale_shape).to(scale_dtype)
        dot = None
        if gn.dim() == 3 and s1.shape == (gn.shape[0], 1, gn.shape[2]):  # (B, 1, d): one per sample
            dot = torch.matmul(gn, s1.transpose(1, 2)).div_(gn.shape[2])
        grad_h = _norm_backward(g * s1, nf, rstd, dot)
        return grad_h.to(h_dtype), grad_shift, grad_scale, None


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, sign: float) -> Tensor:
    """x * cos + rotate_half(x) * (sign * sin) in two passes (rotate_half(x) = [-x2, x1], never built)."""
    half = x.shape[-1] // 2
    xf = x.to(_acc(x))
    out = xf * cos
    out[..., :half].addcmul_(xf[..., half:], sin[..., :half], value=-sign)
    out[..., half:].addcmul_(xf[..., :half], sin[..., half:], value=sign)
    return out.to(x.dtype)


class _Rope(Function):
    """Rotary embedding, half-split layout; the backward is the inverse rotation (sin negated)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, -1.0), None, None


class _SwiGLU(Function):
    """a * silu(g) for [a, g] = proj.chunk(2); the gradient is written into one (.., 2 F) tensor."""

    @staticmethod
    def forward(ctx: Any, proj: Tensor) -> Tensor:
        a, gate = proj.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(proj, act)
        return a * act

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        proj, act = ctx.saved_tensors
        a, gate = proj.chunk(2, dim=-1)
        out = torch.empty_like(proj)
        grad_a, grad_gate = out.chunk(2, dim=-1)
        torch.mul(grad, act, out=grad_a)
        torch.ops.aten.silu_backward.grad_input(grad * a, gate, grad_input=grad_gate)
        return out


class _RMSNormRope(Function):
    """rope(rms_norm(x) * weight): the attention's QK-norm and rotary embedding in one function.

    The weight is folded into the rotation tables (rope(n * w) = n * (w cos) + rotate_half(n) * (w' sin),
    w' the half-swapped weight), so the forward takes four passes over x instead of seven, and the
    backward reuses (g' * n) for both the weight gradient and the norm's dot product (a matrix-vector
    product). Equal to ``apply_rope(rms_norm(x, norm), cos, sin)`` up to float rounding.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, cos: Tensor, sin: Tensor, eps: float) -> Tensor:
        rstd = _inv_rms(x, eps)
        n = x * rstd
        w = weight.to(n.dtype)
        half = x.shape[-1] // 2
        w_sin = torch.cat([-w[half:] * sin[..., :half], w[:half] * sin[..., half:]], dim=-1)
        out = n * (w * cos)
        out[..., :half].addcmul_(n[..., half:], w_sin[..., :half])
        out[..., half:].addcmul_(n[..., :half], w_sin[..., half:])
        ctx.save_for_backward(n, rstd, weight, cos, sin)
        ctx.x_dtype = x.dtype
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None, None, None]:
        n, rstd, weight, cos, sin = ctx.saved_tensors
        gy = _rotate(grad.to(n.dtype), cos, sin, -1.0)  # dL/d(n * w): the inverse rotation
        gyn = gy * n
        w = weight.to(n.dtype)
        grad_weight = gyn.sum_to_size(weight.shape).to(weight.dtype) if ctx.needs_input_grad[1] else None
        dot = torch.matmul(gyn, w).unsqueeze(-1).div_(n.shape[-1])  # mean(g' w n) over the last dim
        grad_x = gy.mul_(w).addcmul_(n, dot, value=-1.0).mul_(rstd)
        return grad_x.to(ctx.x_dtype), grad_weight, None, None, None


def rms_norm_rope(x: Tensor, norm: torch.nn.Module, cos: Tensor, sin: Tensor) -> Tensor:
    """``apply_rope(rms_norm(x, norm), cos, sin)`` in one function; ``norm`` must carry a weight."""
    return _RMSNormRope.apply(x, norm.weight, cos, sin, norm.eps)  # type: ignore[no-any-return]


class _SwiGLUProjection(Function):
    """a * silu(g) for a = x W[:F]^T, g = x W[F:]^T: diffusers' SwiGLU projection and activation in one.

    The projection runs as two GEMMs on row views of the one (2 F, d) weight (its state-dict key and shape
    unchanged). Why: the fused (.., 2 F) projection output made the backward write the two half-gradients
    into strided column halves of a (.., 2 F) buffer, which took twice the time of contiguous writes, and
    its forward GEMM ran ~5% slower per FLOP than the F-wide ones here (measured in bench/bench_dit.py);
    LLaMA's MLP computes the same two GEMMs. Under autocast the GEMMs run in autocast's dtype as
    ``F.linear`` does; the backward computes in that dtype and returns gradients in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor) -> Tensor:
        half = weight.shape[0] // 2
        a, gate = F.linear(x, weight[:half]), F.linear(x, weight[half:])
        act = F.silu(gate)
        ctx.save_for_backward(x, weight, a, gate, act)
        return a * act

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, weight, a, gate, act = ctx.saved_tensors
        half, dtype = weight.shape[0] // 2, a.dtype  # dtype: the one the forward GEMMs ran in
        grad = grad.to(dtype)
        grad_a = (grad * act).flatten(0, -2)
        grad_gate = grad * a  # silu's backward written over it: no third (.., F) buffer
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        grad_gate = grad_gate.flatten(0, -2)
        w = weight.to(dtype)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(grad_a, w[:half]).addmm_(grad_gate, w[half:])
            grad_x = grad_x.view(x.shape).to(x.dtype)
        if ctx.needs_input_grad[1]:
            rows = x.flatten(0, -2).to(dtype)
            grad_w = torch.empty(weight.shape, dtype=dtype, device=weight.device)
            torch.mm(grad_a.t(), rows, out=grad_w[:half])
            torch.mm(grad_gate.t(), rows, out=grad_w[half:])
            grad_w = grad_w.to(weight.dtype)
        return grad_x, grad_w


def swiglu_projection(x: Tensor, weight: Tensor) -> Tensor:
    """silu(x W[F:]^T) * x W[:F]^T for a bias-free (2 F, d) ``weight``: a SwiGLU layer's ``proj`` and
    activation, through two F-wide GEMMs."""
    return _SwiGLUProjection.apply(x, weight)  # type: ignore[no-any-return]


def rms_norm(x: Tensor, norm: torch.nn.Module) -> Tensor:
    """Apply a diffusers ``RMSNorm`` module (its weight and eps) through the fused function."""
    return _RMSNorm.apply(x, getattr(norm, "weight", None), norm.eps)  # type: ignore[no-any-return]


def modulated_rms_norm(h: Tensor, shift: Tensor, scale: Tensor, eps: float) -> Tensor:
    """rms_norm(h) * (1 + scale) + shift; shift and scale broadcast over the tokens, e.g. (B, 1, d)."""
    return _ModulatedRMSNorm.apply(h, shift, scale, eps)  # type: ignore[no-any-return]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (..., head_dim) pairs (i, i + head_dim / 2); cos and sin broadcast against ``x``."""
    return _Rope.apply(x, cos, sin)  # type: ignore[no-any-return]


def gated_residual_linear(h: Tensor, x: Tensor, weight: Tensor, gate: Tensor | None) -> Tensor:
    """h + gate * (x W^T) for a bias-free (d, k) ``weight``, gate (B, 1, d) per sample or None (= 1).

    Why: the gate scales the projection's output rows, so it folds into the weight's rows (d x k values
    instead of a (B, T, d) pass) and the residual add into the GEMM (``addmm``/``baddbmm`` accumulate into
    h): one GEMM instead of GEMM + addcmul, and in the backward no (B, T, d) multiply for the projection's
    input gradient nor a multiply and token sum for the gate's (both come from the d x k weight gradient).
    Equal to ``torch.addcmul(h, gate, F.linear(x, W))`` up to float rounding; autograd differentiates it.
    """
    d, k = weight.shape
    rows = x.reshape(-1, k)
    if gate is None:
        return torch.addmm(h.reshape(-1, d), rows, weight.t()).view(h.shape)
    if h.shape[0] == 1:
        return torch.addmm(h.reshape(-1, d), rows, (weight * gate.reshape(d, 1)).t()).view(h.shape)
    scaled = weight * gate.reshape(h.shape[0], d, 1)  # (B, d, k): one weight copy per sample
    return torch.baddbmm(h, x, scaled.transpose(1, 2))


def swiglu(proj: Tensor) -> Tensor:
    """diffusers' SwiGLU activation on its projection's output (first half value, second half gate)."""
    return _SwiGLU.apply(proj)  # type: ignore[no-any-return]


def autocast_active(device: torch.device) -> bool:
    """Whether autocast is on for ``device``'s type; False where autocast does not exist (the meta device,
    on which the no-host-read test runs a training step), instead of the error torch raises there."""
    return torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type)
