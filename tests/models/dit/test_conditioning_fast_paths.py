"""The conditioning encoders' shorter paths against the composition they replace.

- The lyric ConvNeXt's depthwise convolution reads the (B, T, D) tokens as a channels-last image instead of
  running ``Conv1d`` on a transposed copy: same outputs and gradients to float rounding.
- ``ConditionEmbedder`` skips the ``where`` that would put the null lyric embedding into rows that keep
  their lyrics, the context projection of an all-zero batch and the padding multiply when every frame is
  valid: outputs and gradients bit for bit those of the full composition, and every parameter still gets
  a gradient (DDP without find_unused_parameters needs each rank to use the same parameters).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from refrain.models.dit.conditioning import ConditionEmbedder, DiTConditioning
from refrain.models.dit.lyrics import ConvNeXtBlock1d

TEXT, C, D = 12, 4, 16


def _reference_convnext(block: ConvNeXtBlock1d, x: Tensor, mask: Tensor | None) -> Tensor:
    """The block as written before: ``Conv1d`` on the (B, D, T) transpose."""
    x = x if mask is None else x * mask
    h = block.dwconv(x.transpose(1, 2)).transpose(1, 2)
    h = block.pw2(block.act(block.pw1(block.norm(h))))
    return x + h if mask is None else (x + h) * mask


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("masked", [False, True])
def test_convnext_block_equals_the_conv1d_composition(dtype: torch.dtype, masked: bool) -> None:
    torch.manual_seed(0)
    block = ConvNeXtBlock1d(24, kernel_size=7).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 40, 24, generator=g, dtype=dtype).requires_grad_()
    mask = (torch.arange(40)[None] < torch.tensor([40, 31, 17])[:, None]).unsqueeze(-1).to(dtype)
    mask = mask if masked else None
    weight = torch.randn(3, 40, 24, generator=g, dtype=dtype)
    wanted = [x, *block.parameters()]
    out, ref = block(x, mask), _reference_convnext(block, x, mask)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(out, ref, rtol=0, atol=tol * ref.abs().max().item())
    for a, b in zip(
        torch.autograd.grad((out * weight).sum(), wanted),
        torch.autograd.grad((ref * weight).sum(), wanted),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=tol * max(b.abs().max().item(), 1e-12))


def _embedder() -> ConditionEmbedder:
    torch.manual_seed(0)
    emb = ConditionEmbedder(
        hidden_size=D, latent_channels=C, text_dim=TEXT, lyric_vocab_size=30, lyric_dim=8, lyric_conv_layers=2
    )
    with torch.no_grad():
        emb.context_proj.bias.normal_()  # a projection of zeros is then not zero: discarding it matters
    return emb


def _cond(context: bool, padded: bool, drop_lyrics: bool) -> DiTConditioning:
    g = torch.Generator().manual_seed(7)
    b, t = 2, 11
    frame_mask = torch.ones(b, t, dtype=torch.bool)
    if padded:
        frame_mask[1, 8:] = False
    cond = DiTConditioning(
        style=torch.randn(b, 5, TEXT, generator=g),
        style_mask=torch.ones(b, 5, dtype=torch.bool),
        lyrics=torch.randint(1, 30, (b, t), generator=g),
        context=torch.randn(b, C, t, generator=g) if context else None,
        frame_mask=frame_mask,
    )
    cond.drop_lyrics[0] = drop_lyrics
    return cond


def _reference_frame(emb: ConditionEmbedder, cond: DiTConditioning) -> Tensor:
    """The frame embedding as composed before: where over every row, the projection of zeros, the mask."""
    lyr = emb.lyric_proj(emb.lyric_embedder(cond.lyrics, cond.frame_mask))
    lyr = torch.where(cond.drop_lyrics[:, None, None], emb.null_lyrics, lyr)
    b, t = cond.batch_size, cond.num_frames
    if cond.context is None:
        feats = emb.context_proj.weight.new_zeros(b, t, C + 1)
    else:
        mask = cond.context_mask.to(cond.context.dtype)
        feats = torch.cat([cond.context * mask, mask], dim=1).transpose(1, 2)
    ctx = torch.where(cond.context_present()[:, None, None], emb.context_proj(feats), emb.null_context)
    return (lyr + ctx) * cond.frame_mask.unsqueeze(-1).float()


@pytest.mark.parametrize(
    ("context", "padded", "drop_lyrics"),
    [(False, False, False), (True, False, False), (False, True, True), (True, True, False)],
)
def test_embedder_skips_equal_the_full_composition_and_keep_every_parameter(
    context: bool, padded: bool, drop_lyrics: bool
) -> None:
    emb = _embedder()
    cond = _cond(context, padded, drop_lyrics)
    out = emb(cond)
    ref = _reference_frame(emb, cond)
    torch.testing.assert_close(out.frame, ref, rtol=0, atol=1e-6)
    if not drop_lyrics:  # no row dropped: the same ops, so the same bits
        assert torch.equal(out.frame, ref)
    weight = torch.linspace(-1, 1, out.frame.numel()).view_as(out.frame)
    params = dict(emb.named_parameters())
    got = torch.autograd.grad(
        (out.frame * weight).sum() + out.vector.sum() + out.style.sum(), list(params.values())
    )  # no allow_unused: every parameter is in the graph (with a zero gradient where unused)
    again = emb(cond)
    rest = torch.autograd.grad(
        again.vector.sum() + again.style.sum(), list(params.values()), allow_unused=True
    )
    ref_grads = torch.autograd.grad(
        (ref * weight).sum(), list(params.values()), allow_unused=True, retain_graph=True
    )
    for (name, _), a, b, v in zip(params.items(), got, ref_grads, rest, strict=True):
        expect = (b if b is not None else 0) + (v if v is not None else 0)
        torch.testing.assert_close(a, torch.as_tensor(expect).expand_as(a), rtol=0, atol=1e-6, msg=name)
    if not context and not drop_lyrics:  # used by no row: in the graph with an exactly zero gradient
        for name in ("null_lyrics", "context_proj.weight", "context_proj.bias"):
            assert not got[list(params).index(name)].any(), name


@pytest.mark.parametrize("frames", [40, 3, 1])  # longer and shorter than the kernel's reach
def test_depthwise_same_conv_backward_equals_the_stock_one(frames: int) -> None:
    """The lyric conv's hand-written backward against the stock convolution's (float64 gradcheck and the
    Conv1d gradients), including sequences shorter than the kernel, where taps only read padding."""
    from refrain.models.dit.lyrics import _DepthwiseSame, depthwise_conv_tokens

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, 7, padding=3, groups=6).double()
    x = torch.randn(2, frames, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: _DepthwiseSame.apply(a, w, b), (x, conv.weight, conv.bias)
    )
    grad = torch.randn(2, frames, 6, dtype=torch.float64)
    out = depthwise_conv_tokens(conv, x)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    wanted = [x, conv.weight, conv.bias]
    for a, b in zip(
        torch.autograd.grad(out, wanted, grad), torch.autograd.grad(ref, wanted, grad), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
