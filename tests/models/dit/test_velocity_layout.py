"""The DiT's velocity comes back laid out as its input latent, (B, C, T) contiguous, with the same values.

Before, the output was a transposed view of the final layer's (B, T, C) result, multiplied by the frame
mask: every op a sampler ran on it between model calls read strided memory, and flattening it for APG's
norms copied it. The mask multiply now runs only when some frame is padding (a mask of ones changed
nothing), and the transpose is made contiguous in its place.
"""

from __future__ import annotations

import pytest
import torch
from helpers.lora import inputs, plain_cond, tiny_dit

from refrain.models.dit.blocks import rotary_tables


@pytest.mark.parametrize("padded", [False, True])
def test_velocity_is_contiguous_and_equals_the_masked_transpose(padded: bool) -> None:
    model = tiny_dit()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised heads would give an all-zero velocity
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x, sigma = inputs(batch=2, frames=10)
    cond = plain_cond(batch=2, frames=10)
    if padded:
        cond.frame_mask[1, 6:] = False
    with torch.no_grad():
        out = model(x, sigma, cond).velocity
        h, c, style, style_mask = model.embed(x, sigma, cond)
        shared = model.adaLN_modulation(c)
        rope = rotary_tables(model.head_dim, x.shape[-1], model.rope_theta, x.device)
        self_mask = cond.frame_mask[:, None, None, :] if padded else None
        for block in model.blocks:
            h = block(h, c, shared, rope, self_mask, style, style_mask[:, None, None, :])
        want = model.final_layer(h, c).transpose(1, 2) * cond.frame_mask[:, None, :].float()
    assert out.is_contiguous() and out.shape == x.shape
    assert torch.equal(out, want)
    if padded:
        assert not out[1, :, 6:].any()
