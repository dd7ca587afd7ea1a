"""``blocks.attention``: the CPU path for a short key sequence gives SDPA's outputs and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from refrain.models.dit.blocks import SHORT_CONTEXT, attention


def _inputs(keys: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 50, 16, generator=g, requires_grad=True)
    k = torch.randn(3, 4, keys, 16, generator=g, requires_grad=True)
    v = torch.randn(3, 4, keys, 16, generator=g, requires_grad=True)
    return q, k, v


def _mask(keys: int) -> torch.Tensor:
    mask = torch.ones(3, 1, 1, keys, dtype=torch.bool)
    mask[1, ..., keys // 2 :] = False  # a padded prompt
    mask[2] = False  # no key at all: SDPA gives 0 there, not NaN
    return mask


@pytest.mark.parametrize("masked", [False, True])
def test_short_keys_match_sdpa_in_outputs_and_gradients(masked: bool) -> None:
    keys = 24
    mask = _mask(keys) if masked else None
    ours, theirs = _inputs(keys), _inputs(keys)
    out = attention(*ours, mask)
    ref = F.scaled_dot_product_attention(*theirs, attn_mask=mask)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.isfinite(a.grad).all()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_long_keys_run_through_sdpa_itself() -> None:
    q, k, v = _inputs(SHORT_CONTEXT + 1)
    with torch.no_grad():
        assert torch.equal(attention(q, k, v, None), F.scaled_dot_product_attention(q, k, v))
