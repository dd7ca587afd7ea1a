"""The DiT block's fused elementwise functions: same outputs and gradients as the stock-op composition.

The reference here is the block as it was written with diffusers' pieces before ``fused`` existed
(``RMSNorm.forward``, ``apply_rotary_emb`` on (B, heads, T, head_dim), ``FeedForward.forward``, adaLN as
``norm(h) * (1 + scale) + shift``), run on the same module instance, so a drift in either shows.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.normalization import RMSNorm
from torch import Tensor

from refrain.models.dit.blocks import Attention, DiTBlock, FinalLayer, rotary_tables
from refrain.models.dit.fused import apply_rope, modulated_rms_norm, rms_norm, swiglu


def _reference_attention(attn: Attention, x: Tensor, context=None, mask=None, rope=None) -> Tensor:
    kv = x if context is None else context

    def heads(t: Tensor) -> Tensor:
        return t.unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(1, 2)

    q, k, v = attn.norm_q(heads(attn.to_q(x))), attn.norm_k(heads(attn.to_k(kv))), heads(attn.to_v(kv))
    if rope is not None:
        q = apply_rotary_emb(q, rope, use_real=True, use_real_unbind_dim=-2)
        k = apply_rotary_emb(k, rope, use_real=True, use_real_unbind_dim=-2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)
    return attn.to_out[1](attn.to_out[0](out))


def _reference_block(block: DiTBlock, h, c, shared, rope, self_mask, style, style_mask) -> Tensor:
    mod = shared if block.adaLN_modulation is None else block.adaLN_modulation(c)
    mod = mod.view(-1, 6, block.dim) + block.scale_shift_table[None]
    shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = (m.unsqueeze(1) for m in mod.unbind(1))
    h = h + gate_a * _reference_attention(
        block.attn, block.norm1(h) * (1 + scale_a) + shift_a, mask=self_mask, rope=rope
    )
    if block.cross_attn is not None:
        h = h + _reference_attention(block.cross_attn, block.norm2(h), context=style, mask=style_mask)
    return h + gate_f * block.ff(block.norm3(h) * (1 + scale_f) + shift_f)


def _randomized(module: torch.nn.Module) -> torch.nn.Module:
    """Trained-like values: zero-initialised gates, tables and heads made non-zero, norm weights near one;
    the projections keep nn.Linear's default scale (outputs of order one)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif not p.abs().any():
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return module


def _inputs(dtype: torch.dtype, b: int = 2, t: int = 10, d: int = 32, s: int = 5):
    g = torch.Generator().manual_seed(5)
    h = torch.randn(b, t, d, generator=g, dtype=dtype).requires_grad_()
    c = torch.randn(b, d, generator=g, dtype=dtype)
    shared = (0.5 * torch.randn(b, 6 * d, generator=g, dtype=dtype)).requires_grad_()
    style = torch.randn(b, s, d, generator=g, dtype=dtype).requires_grad_()
    self_mask = (torch.arange(t)[None] < torch.tensor([t, t - 3])[:, None])[:, None, None, :]
    style_mask = torch.tensor([[True] * s, [True] * (s - 2) + [False] * 2])[:, None, None, :]
    return h, c, shared, style, self_mask, style_mask


def _assert_within(a: Tensor, b: Tensor, tol: float) -> None:
    """Largest difference within ``tol`` of the tensor's own scale (float32 sums differ by rounding)."""
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= tol * max(scale, 1e-12), (a - b).abs().max().item() / scale


def _grads(out: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)  # not symmetric in tokens
    return list(torch.autograd.grad((out * weight).sum(), tensors))


@pytest.mark.parametrize("shared_adaln", [True, False])
@pytest.mark.parametrize("cross_attention", [True, False])
def test_block_matches_the_stock_op_composition(shared_adaln: bool, cross_attention: bool) -> None:
    torch.manual_seed(0)
    block = _randomized(
        DiTBlock(32, 4, 48, shared_adaln=shared_adaln, cross_attention=cross_attention)
    ).double()
    h, c, shared, style, self_mask, style_mask = _inputs(torch.float64)
    rope = rotary_tables(8, h.shape[1], 10000.0, h.device)
    rope = (rope[0].double(), rope[1].double())
    args = (h, c, shared if shared_adaln else None, rope, self_mask, style, style_mask)
    wanted = [
        h,
        *([style] if cross_attention else []),
        *([shared] if shared_adaln else []),
        *block.parameters(),
    ]
    fused = block(*args)
    reference = _reference_block(block, *args)  # diffusers' pieces compute norms and RoPE in float32
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-6)
    for a, b in zip(_grads(fused, wanted), _grads(reference, wanted), strict=True):
        _assert_within(a, b, 1e-6)


def test_float32_block_output_and_gradients_within_1e_6() -> None:
    """At training precision: the same math, differing by rounding only (addcmul rounds a*b+c once)."""
    torch.manual_seed(0)
    block = _randomized(DiTBlock(32, 4, 48))
    h, c, shared, style, self_mask, style_mask = _inputs(torch.float32)
    rope = rotary_tables(8, h.shape[1], 10000.0, h.device)
    args = (h, c, shared, rope, self_mask, style, style_mask)
    fused, reference = block(*args), _reference_block(block, *args)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-6)
    wanted = [h, style, shared, *block.parameters()]
    for a, b in zip(_grads(fused, wanted), _grads(reference, wanted), strict=True):
        _assert_within(a, b, 1e-6)


def test_each_function_passes_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    norm = RMSNorm(6, 1e-6).double()
    weight = norm.weight
    with torch.no_grad():
        weight.copy_(1 + 0.3 * torch.randn(6, generator=g))
    assert torch.autograd.gradcheck(lambda a, _w: rms_norm(a, norm), (x, weight))
    assert torch.autograd.gradcheck(lambda a: rms_norm(a, RMSNorm(6, 1e-6, elementwise_affine=False)), (x,))
    h = torch.randn(2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    shift, scale = (torch.randn(2, 1, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in "ab")
    assert torch.autograd.gradcheck(lambda *a: modulated_rms_norm(*a, 1e-6), (h, shift, scale))
    cos, sin = (t.double()[:, None] for t in rotary_tables(6, 3, 10000.0, x.device))
    assert torch.autograd.gradcheck(lambda a: apply_rope(a, cos, sin), (x,))
    proj = torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swiglu, (proj,))


def test_final_layer_and_state_dict_keys_unchanged() -> None:
    """The fused path reads the same modules: parameter names and shapes stay what checkpoints hold."""
    block = DiTBlock(32, 4, 48)
    assert sorted((k, tuple(v.shape)) for k, v in block.state_dict().items()) == sorted(
        [
            ("norm2.weight", (32,)),
            ("attn.to_q.weight", (32, 32)),
            ("attn.to_k.weight", (32, 32)),
            ("attn.to_v.weight", (32, 32)),
            ("attn.to_out.0.weight", (32, 32)),
            ("attn.norm_q.weight", (8,)),
            ("attn.norm_k.weight", (8,)),
            *[(f"cross_attn.{k}", s) for k, s in [("to_q.weight", (32, 32)), ("to_k.weight", (32, 32))]],
            ("cross_attn.to_v.weight", (32, 32)),
            ("cross_attn.to_out.0.weight", (32, 32)),
            ("cross_attn.norm_q.weight", (8,)),
            ("cross_attn.norm_k.weight", (8,)),
            ("ff.net.0.proj.weight", (96, 32)),
            ("ff.net.2.weight", (32, 48)),
            ("scale_shift_table", (6, 32)),
        ]
    )
    final = _randomized(FinalLayer(32, 8))
    h, c = torch.randn(2, 7, 32), torch.randn(2, 32)
    shift, scale = final.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)
    torch.testing.assert_close(
        final(h, c), final.proj_out(final.norm(h) * (1 + scale) + shift), rtol=0, atol=1e-6
    )


def test_lyric_embedder_skips_the_padding_multiplies_when_every_frame_is_valid() -> None:
    from refrain.models.dit.lyrics import LyricEmbedder

    embedder = LyricEmbedder(30, 16, num_layers=2)
    ids = torch.randint(1, 30, (2, 9), generator=torch.Generator().manual_seed(0))
    valid = torch.ones(2, 9, dtype=torch.bool)
    assert torch.equal(embedder(ids, valid, all_valid=True), embedder(ids, valid))  # x * 1 is x, bit for bit


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_swiglu_projection_equals_the_linear_then_swiglu_composition(dtype: torch.dtype) -> None:
    """Two F-wide GEMMs on row views of the (2 F, d) weight == diffusers' proj + chunk + silu (previous)."""
    from refrain.models.dit.fused import swiglu_projection

    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 7, 12, generator=g, dtype=dtype, requires_grad=True)
    weight = (0.3 * torch.randn(2 * 20, 12, generator=g, dtype=dtype)).requires_grad_()
    a, gate = F.linear(x, weight).chunk(2, dim=-1)
    reference = a * F.silu(gate)
    fused = swiglu_projection(x, weight)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    _assert_within(fused, reference, tol)
    for got, want in zip(_grads(fused, [x, weight]), _grads(reference, [x, weight]), strict=True):
        _assert_within(got, want, tol)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(swiglu_projection, (x[:, :3], weight))
    frozen = swiglu_projection(x, weight.detach())  # a frozen weight: only the input's gradient
    a, gate = F.linear(x, weight.detach()).chunk(2, dim=-1)
    _assert_within(_grads(frozen, [x])[0], _grads(a * F.silu(gate), [x])[0], tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_norm_rope_equals_rope_of_the_norm(dtype: torch.dtype) -> None:
    """QK-norm and RoPE in one function (weight folded into the tables) == the two functions in turn."""
    from refrain.models.dit.fused import rms_norm_rope

    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 9, 3, 8, generator=g, dtype=dtype, requires_grad=True)
    norm = RMSNorm(8, 1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(8, generator=g))
    cos, sin = (t.to(dtype)[:, None] for t in rotary_tables(8, 9, 10000.0, x.device))
    fused = rms_norm_rope(x, norm, cos, sin)
    reference = apply_rope(rms_norm(x, norm), cos, sin)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    _assert_within(fused, reference, tol)
    for got, want in zip(_grads(fused, [x, norm.weight]), _grads(reference, [x, norm.weight]), strict=True):
        _assert_within(got, want, tol)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(
            lambda a, _w: rms_norm_rope(a, norm, cos[:4], sin[:4]), (x[:, :4], norm.weight)
        )


def test_a_wrapped_feed_forward_projection_is_called_as_a_module() -> None:
    """A hook (as a LoRA wrapper or an FSDP unit would add) on ff.net.0.proj still runs: the block only
    takes the two-GEMM path for a plain bias-free nn.Linear, and both paths give the same output."""
    torch.manual_seed(0)
    block = _randomized(DiTBlock(32, 4, 48))
    h, c, shared, style, self_mask, style_mask = _inputs(torch.float32)
    rope = rotary_tables(8, h.shape[1], 10000.0, h.device)
    args = (h, c, shared, rope, self_mask, style, style_mask)
    plain = block(*args)
    calls = []
    handle = block.ff.net[0].proj.register_forward_hook(lambda *_: calls.append(1))
    try:
        hooked = block(*args)
    finally:
        handle.remove()
    assert calls == [1]
    _assert_within(hooked, plain, 1e-6)


@pytest.mark.parametrize(("batch", "frames"), [(1, 10), (2, 48)])  # addmm (one song), baddbmm (a batch)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gates_folded_into_the_output_projections_match_the_composition(
    batch: int, frames: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attention and FFN output GEMMs accumulate into the residual with the adaLN gate folded into
    their weights (``gated_residual_linear``): the block's output and every gradient equal the
    ``h + gate * proj(x)`` composition within 1e-6 of their scale, and the folded path is the one taken."""
    import refrain.models.dit.blocks as blocks

    calls: list[bool] = []
    real = blocks.gated_residual_linear
    monkeypatch.setattr(blocks, "gated_residual_linear", lambda *a: calls.append(a[3] is None) or real(*a))
    torch.manual_seed(0)
    block = _randomized(DiTBlock(32, 4, 48)).to(dtype)
    h, c, shared, style, self_mask, style_mask = _inputs(dtype, t=frames)
    h, shared, style = (t[:batch].detach().requires_grad_() for t in (h, shared, style))
    rope = tuple(t.to(dtype) for t in rotary_tables(8, frames, 10000.0, h.device))
    args = (h, c[:batch], shared, rope, self_mask[:batch], style, style_mask[:batch])
    fused = block(*args)
    assert calls == [False, True, False]  # self-attention (gated), cross-attention (no gate), FFN (gated)
    reference = _reference_block(block, *args)
    _assert_within(fused, reference, 1e-6)
    wanted = [h, style, shared, *block.parameters()]
    for a, b in zip(_grads(fused, wanted), _grads(reference, wanted), strict=True):
        _assert_within(a, b, 1e-6)


def test_gate_folding_steps_aside_for_hooks_dropout_and_short_batches() -> None:
    """A hooked (or LoRA-wrapped) output projection is still called as a module, active dropout still
    drops, and a batch with fewer tokens than the projection's width keeps the addcmul (no weight copies)."""
    torch.manual_seed(0)
    block = _randomized(DiTBlock(32, 4, 48))
    h, c, shared, style, self_mask, style_mask = _inputs(torch.float32)
    rope = rotary_tables(8, h.shape[1], 10000.0, h.device)
    args = (h[:1], c[:1], shared[:1], rope, self_mask[:1], style[:1], style_mask[:1])
    seen: list[str] = []
    block.attn.to_out[0].register_forward_hook(lambda *_: seen.append("attn"))
    block.ff.net[-1].register_forward_hook(lambda *_: seen.append("ff"))
    _assert_within(block(*args), _reference_block(block, *args), 1e-6)
    assert seen == ["attn", "ff"] * 2  # once in the block, once in the reference
    block = _randomized(DiTBlock(32, 4, 48, dropout=0.5)).train()
    torch.manual_seed(1)
    dropped = block(*args)
    torch.manual_seed(1)
    _assert_within(dropped, _reference_block(block, *args), 1e-6)
    short = _randomized(DiTBlock(32, 4, 48))  # 2 samples x 10 tokens < 32 input features: addcmul path
    full = (h, c, shared, rope, self_mask, style, style_mask)
    _assert_within(short(*full), _reference_block(short, *full), 1e-6)
