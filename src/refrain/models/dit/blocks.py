"""Transformer pieces of the DiT: attention, the adaLN-zero block and the final layer.

Kept parts are reused where they fit: diffusers' ``RMSNorm`` (affine-free for the modulated norms),
its SwiGLU ``FeedForward`` and its rotary table; attention runs through PyTorch's
``scaled_dot_product_attention`` so flash/memory-efficient kernels apply on GPU. Projection names follow
diffusers/ACE-Step (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) so ACE-Step's LoRA target lists apply.
The modules hold the parameters; the elementwise math between the GEMMs runs through ``fused`` (same
forward ops, shorter backward), and QK-norm and RoPE act on (B, T, heads, head_dim) before the one
transpose attention needs, where the per-head norm reads contiguous memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.activations import SwiGLU
from diffusers.models.attention import FeedForward
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.models.normalization import RMSNorm
from torch import Tensor, nn

from refrain.models.dit.fused import (
    apply_rope,
    autocast_active,
    gated_residual_linear,
    modulated_rms_norm,
    rms_norm,
    rms_norm_rope,
    swiglu,
    swiglu_projection,
)

Rope = tuple[Tensor, Tensor]


def rotary_tables(head_dim: int, num_positions: int, theta: float, device: torch.device) -> Rope:
    """(cos, sin), each (T, head_dim), in the half-split layout LLaMA's ``rotate_half`` uses."""
    pos = torch.arange(num_positions, device=device, dtype=torch.float32)
    cos, sin = get_1d_rotary_pos_embed(
        head_dim, pos, theta=theta, use_real=True, repeat_interleave_real=False
    )
    return cos, sin


class Attention(nn.Module):
    """Multi-head attention over (B, T, D); self-attention when ``context`` is None."""

    def __init__(
        self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False), nn.Dropout(dropout)])
        self.norm_q: nn.Module = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()
        self.norm_k: nn.Module = RMSNorm(self.head_dim, eps) if qk_norm else nn.Identity()

    def _heads(self, x: Tensor, norm: nn.Module | None = None, rope: Rope | None = None) -> Tensor:
        """(B, T, d) -> (B, T, heads, head_dim), QK-normed when ``norm`` is an RMSNorm, then rotated when
        ``rope`` is given (a weighted norm and the rotation in one function)."""
        x = x.unflatten(-1, (self.num_heads, self.head_dim))
        normed = norm is not None and not isinstance(norm, nn.Identity)
        if rope is None:
            return rms_norm(x, norm) if normed else x
        cos, sin = rope[0][:, None], rope[1][:, None]  # (T, 1, head_dim): broadcast over heads
        if normed and getattr(norm, "weight", None) is not None:
            return rms_norm_rope(x, norm, cos, sin)  # type: ignore[arg-type]
        return apply_rope(rms_norm(x, norm) if normed else x, cos, sin)  # type: ignore[arg-type]

    def forward(
        self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None, rope: Rope | None = None
    ) -> Tensor:
        """mask: bool (B, 1, 1, S), True = key may be attended (bidirectional, no causal mask)."""
        return self.to_out[1](self.to_out[0](self._attend(x, context, mask, rope)))

    def residual(
        self,
        h: Tensor,
        gate: Tensor | None,
        x: Tensor,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        rope: Rope | None = None,
    ) -> Tensor:
        """h + gate * attention(x) (gate (B, 1, d), None = 1): with a plain output projection and no active
        dropout the gate and the residual add fold into the projection's GEMM (``gated_residual_linear``)."""
        out = self._attend(x, context, mask, rope)
        proj, dropout = self.to_out[0], self.to_out[1]
        if _foldable(proj, h, out) and (dropout.p == 0 or not dropout.training):  # type: ignore[operator]
            return gated_residual_linear(h, out, proj.weight, gate)
        y = dropout(proj(out))
        return h + y if gate is None else torch.addcmul(h, gate, y)

    def _attend(self, x: Tensor, context: Tensor | None, mask: Tensor | None, rope: Rope | None) -> Tensor:
        """The heads' attention output, (B, T, d), before the output projection."""
        kv = x if context is None else context
        q = self._heads(self.to_q(x), self.norm_q, rope)
        k = self._heads(self.to_k(kv), self.norm_k, rope)
        v = self._heads(self.to_v(kv))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).flatten(2)


def zero_linear(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class DiTBlock(nn.Module):
    """Pre-norm LLaMA-style block with adaLN-zero modulation.

    self-attention (RoPE, padding mask) -> cross-attention to the style prompt -> SwiGLU MLP. The
    modulation is ``scale_shift_table + m(c)`` where ``m`` is either one projection shared by all blocks
    (PixArt's adaLN-single: saves 6 d^2 parameters per block) or the block's own. The table, ``m`` and
    the cross-attention output are zero at init, so a fresh block is exactly the identity.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        intermediate_size: int,
        qk_norm: bool = True,
        shared_adaln: bool = True,
        eps: float = 1e-6,
        dropout: float = 0.0,
        cross_attention: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.norm1 = RMSNorm(dim, eps, elementwise_affine=False)
        self.attn = Attention(dim, num_heads, qk_norm, eps, dropout)
        self.norm2: nn.Module | None = None
        self.cross_attn: Attention | None = None
        if cross_attention:  # off: the pooled style still modulates the block through adaLN
            self.norm2 = RMSNorm(dim, eps, elementwise_affine=True)
            self.cross_attn = Attention(dim, num_heads, qk_norm, eps, dropout)
            zero_linear(self.cross_attn.to_out[0])
        self.norm3 = RMSNorm(dim, eps, elementwise_affine=False)
        self.ff = FeedForward(
            dim, inner_dim=intermediate_size, activation_fn="swiglu", bias=False, dropout=dropout
        )
        self.scale_shift_table = nn.Parameter(torch.zeros(6, dim))
        self.adaLN_modulation: nn.Module | None = None
        if not shared_adaln:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_linear(nn.Linear(dim, 6 * dim)))

    def forward(
        self,
        h: Tensor,
        c: Tensor,
        shared_mod: Tensor | None,
        rope: Rope,
        self_mask: Tensor,
        style: Tensor | None,
        style_mask: Tensor | None,
    ) -> Tensor:
        mod = shared_mod if self.adaLN_modulation is None else self.adaLN_modulation(c)
        assert mod is not None, "a block without its own modulation needs the shared one"
        mod = mod.view(-1, 6, self.dim) + self.scale_shift_table[None].to(mod.dtype)
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (m.unsqueeze(1) for m in mod.unbind(1))
        x = modulated_rms_norm(h, shift_a, scale_a, self.norm1.eps)
        h = self.attn.residual(h, gate_a, x, mask=self_mask, rope=rope)
        if self.cross_attn is not None and self.norm2 is not None:
            h = self.cross_attn.residual(h, None, rms_norm(h, self.norm2), context=style, mask=style_mask)
        x = modulated_rms_norm(h, shift_f, scale_f, self.norm3.eps)
        layers = list(self.ff.net)
        last = layers[-1]
        if isinstance(last, nn.Linear) and _foldable(last, h, x):
            return gated_residual_linear(h, self._feed_forward(x, layers[:-1]), last.weight, gate_f)
        return torch.addcmul(h, gate_f, self._feed_forward(x, layers))

    def _feed_forward(self, x: Tensor, layers: list[nn.Module]) -> Tensor:
        """diffusers' FeedForward, its SwiGLU through ``fused``: the projection and activation in one
        function while ``proj`` is a plain bias-free ``nn.Linear``; a wrapped one (a LoRA layer, a hook)
        is called as a module, so adapters and hooks still apply."""
        for layer in layers:
            if not isinstance(layer, SwiGLU):
                x = layer(x)
            elif _plain_linear(layer.proj):
                x = swiglu_projection(x, layer.proj.weight)
            else:
                x = swiglu(layer.proj(x))
        return x


def _plain_linear(module: nn.Module) -> bool:
    """An ``nn.Linear`` itself (no subclass, bias or hooks), so its forward is exactly ``F.linear(x, w)``."""
    return (
        type(module) is nn.Linear
        and module.bias is None
        and not (module._forward_hooks or module._forward_pre_hooks)
        and not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
    )


def _foldable(proj: nn.Module, h: Tensor, x: Tensor) -> bool:
    """``gated_residual_linear`` may replace ``h + gate * proj(x)``: a plain bias-free linear (no LoRA
    wrapper or hook), no autocast (its GEMM would round the float32 residual stream to the low dtype), one
    dtype, and for several samples (one scaled weight copy each) at least as many tokens per sample as
    the projection's input width, so the weight copies cost no more than the pass they save."""
    if not _plain_linear(proj) or autocast_active(h.device):
        return False
    weight = proj.weight  # type: ignore[union-attr]
    if not (h.dtype == x.dtype == weight.dtype):
        return False
    return h.shape[0] == 1 or h.shape[1] >= weight.shape[1]


class FinalLayer(nn.Module):
    """adaLN-modulated norm and projection back to latent channels (DiT's zero-initialised head)."""

    def __init__(self, dim: int, out_channels: int, eps: float = 1e-6, zero_init: bool = True) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, eps, elementwise_affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_linear(nn.Linear(dim, 2 * dim)))
        self.proj_out = nn.Linear(dim, out_channels)
        if zero_init:
            zero_linear(self.proj_out)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)
        return self.proj_out(modulated_rms_norm(h, shift, scale, self.norm.eps))
