"""The DiT embeds a sampling run's conditioning once and skips encoders for rows that are dropped anyway."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
from helpers.lora import VOCAB, tiny_dit
from torch import Tensor

from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.dit.conditioning import DiTConditioning
from refrain.sampling.guidance import APG, CFG, CFGZeroStar, GuidanceSchedule
from refrain.sampling.guided import GuidedVelocity
from refrain.sampling.solvers import sample

STEPS, FRAMES = 6, 12


class Eager:
    """The DiT without ``prepare``: what the sampler did before (embed at every call)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, x: Tensor, sigma: Tensor, cond: Any) -> Any:
        return self.model(x, sigma, cond)


class Rows:
    """Counts calls of an encoder module and the batch rows it saw."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = self.rows = 0
        module.register_forward_hook(self)

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        self.calls += 1
        self.rows += int(args[0].shape[0])


def cond_with_context(batch: int = 2) -> DiTConditioning:
    g = torch.Generator().manual_seed(3)
    mask = torch.zeros(batch, 1, FRAMES)
    mask[..., :4] = 1.0
    return DiTConditioning(
        style=torch.randn(batch, 3, 8, generator=g),
        style_mask=torch.ones(batch, 3, dtype=torch.bool),
        lyrics=torch.randint(1, VOCAB, (batch, FRAMES), generator=g),
        context=torch.randn(batch, 4, FRAMES, generator=g),
        context_mask=mask,
    )


GUIDANCES = {
    "none": (lambda: None, None),
    "cfg": (CFG, None),
    "apg": (APG, None),
    "cfg_zero_star": (partial(CFGZeroStar, zero_init_steps=1), None),
    "lyrics_cfg": (CFG, 3.0),  # three passes: full, style only, unconditional
}


def run(model: Any, name: str) -> Tensor:
    make, lyrics_scale = GUIDANCES[name]
    schedule = GuidanceSchedule(STEPS, 0.5, "none", 1.0)  # guided middle half: single and batched passes
    velocity = GuidedVelocity(model, cond_with_context(), make(), 4.0, lyrics_scale, schedule)
    noise = torch.randn(2, 4, FRAMES, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return sample(velocity, noise, torch.linspace(1.0, 0.0, STEPS + 1), "euler")


@pytest.mark.parametrize("name", list(GUIDANCES))
def test_prepared_sampling_matches_eager_with_fewer_encoder_calls(name: str) -> None:
    model = tiny_dit()
    lyric = Rows(model.conditioner.lyric_embedder)
    style = Rows(model.conditioner.style_proj)
    eager = run(Eager(model), name)
    eager_calls = (lyric.calls, lyric.rows, style.calls, style.rows)
    lyric.calls = lyric.rows = style.calls = style.rows = 0
    prepared = run(model, name)
    torch.testing.assert_close(prepared, eager, atol=1e-6, rtol=0)
    assert eager_calls[0] >= STEPS - 1 and eager_calls[2] == eager_calls[0]  # once per model call
    # once per run: the unguided steps slice the conditional rows out of the prepared guidance batch,
    # and the encoders see only the rows that keep the input
    assert lyric.calls == style.calls == 1
    # batch 2: of the batched passes only [cond] keeps lyrics and [cond, cond without lyrics] keep the
    # style; the unconditional rows skip both encoders
    assert lyric.rows == 2
    assert style.rows == {"lyrics_cfg": 4}.get(name, 2)


def training_batch() -> tuple[Tensor, DiTConditioning]:
    g = torch.Generator().manual_seed(7)
    cond = DiTConditioning(
        style=torch.randn(6, 3, 8, generator=g),
        style_mask=torch.ones(6, 3, dtype=torch.bool),
        lyrics=torch.randint(1, VOCAB, (6, FRAMES), generator=g),
    )
    return torch.randn(6, 4, FRAMES, generator=g), cond


def loss_and_grads(model: torch.nn.Module) -> tuple[Tensor, list[Tensor]]:
    x0, cond = training_batch()
    loss_fn = FlowMatchingLoss(drop_style_prob=0.5, drop_lyrics_prob=0.5, masked_span_prob=0.5)
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, x0, cond, generator=torch.Generator().manual_seed(11)).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_training_skips_dropped_rows_with_the_same_loss_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On CPU the drop flags are read; with ``skip_dropped=False`` (a GPU step) the host-side hints the
    loss's CPU draws leave pick the same rows without a device read; both equal encoding every row."""
    model = tiny_dit().train()
    lyric = Rows(model.conditioner.lyric_embedder)
    loss, grads = loss_and_grads(model)
    skipped_rows = lyric.rows
    conditioner = model.conditioner
    forward = type(conditioner).forward
    monkeypatch.setattr(conditioner, "forward", partial(forward, conditioner, skip_dropped=False))
    lyric.rows = 0
    hinted_loss, hinted_grads = loss_and_grads(model)
    assert lyric.rows == skipped_rows
    monkeypatch.setattr("refrain.models.dit.conditioning._kept", lambda *args: (None, False))
    lyric.rows = 0
    before_loss, before_grads = loss_and_grads(model)  # every row through the encoders, as before
    assert lyric.rows == 6 and skipped_rows < 6  # seed 11 drops lyrics for some rows
    for other_loss, other_grads in ((hinted_loss, hinted_grads), (before_loss, before_grads)):
        torch.testing.assert_close(loss, other_loss, atol=1e-6, rtol=0)
        assert len(grads) == len(other_grads)
        for got, want in zip(grads, other_grads, strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_all_rows_dropped_still_reach_every_encoder_parameter() -> None:
    """DDP without find_unused_parameters: a batch whose rows all drop lyrics still touches the encoder."""
    model = tiny_dit().train()
    x0, cond = training_batch()
    cond = cond.with_dropped(style=True, lyrics=True)
    model(x0, torch.rand(6), cond).velocity.square().mean().backward()
    encoder = [*model.conditioner.lyric_embedder.parameters(), *model.conditioner.style_proj.parameters()]
    assert all(p.grad is not None for p in encoder)


def test_style_cross_attention_off_drops_the_blocks_cross_attention_and_keeps_style_through_adaln() -> None:
    from dataclasses import replace

    from refrain.models.dit.blocks import Attention
    from refrain.models.dit.transformer import DiffusionTransformer

    base = tiny_dit()
    assert base.config.style_cross_attention is True  # the default is unchanged
    off = DiffusionTransformer(replace(base.config, style_cross_attention=False)).eval()
    assert off.conditioner.style_proj is None and all(b.cross_attn is None for b in off.blocks)
    assert sum(isinstance(m, Attention) for m in off.modules()) == len(off.blocks)
    assert sum(p.numel() for p in off.parameters()) < sum(p.numel() for p in base.parameters())
    torch.nn.init.normal_(off.adaLN_modulation[1].weight, std=0.5)  # zero at init: make the modulation act
    x0, cond = training_batch()
    other = DiTConditioning(
        style=torch.randn_like(cond.style), style_mask=cond.style_mask, lyrics=cond.lyrics
    )
    with torch.no_grad():
        v, v_other = (off(x0, torch.full((6,), 0.5), c).velocity for c in (cond, other))
    assert not torch.allclose(v, v_other)  # the pooled style still reaches every block
    prepared = off.prepare(cond.with_dropped(style=True))
    assert prepared.embedded.style is None
