"""GuidedVelocity: one batched model call per step, right formulas, interval, zero-init, real DiT."""

from __future__ import annotations

import torch
from torch import Tensor

from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer
from refrain.models.dit.velocity import VelocityOutput
from refrain.sampling.guidance import APG, CFG, CFGZeroStar, GuidanceSchedule
from refrain.sampling.guided import GuidedVelocity, sample_guided
from refrain.sampling.solvers import sample


def make_cond(batch: int = 2, frames: int = 6) -> DiTConditioning:
    gen = torch.Generator().manual_seed(0)
    return DiTConditioning(
        style=torch.randn(batch, 3, 8, generator=gen),
        style_mask=torch.ones(batch, 3, dtype=torch.bool),
        lyrics=torch.randint(1, 16, (batch, frames), generator=gen),
    )


class CountingModel:
    """v = x + 1 * style_on + 2 * lyrics_on; records the batch size of every call."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: Tensor, sigma: Tensor, cond: DiTConditioning) -> VelocityOutput:
        self.batches.append(x.shape[0])
        assert sigma.shape == (x.shape[0],) and cond.batch_size == x.shape[0]
        style_on = (~cond.drop_style).to(x.dtype).view(-1, 1, 1)
        lyrics_on = (~cond.drop_lyrics).to(x.dtype).view(-1, 1, 1)
        return VelocityOutput(velocity=x + style_on + 2.0 * lyrics_on)


def test_two_pass_cfg_is_one_call_with_double_batch() -> None:
    model = CountingModel()
    guided = GuidedVelocity(model, make_cond(), CFG(), scale=2.0)
    x = torch.zeros(2, 4, 6)
    out = guided(x, torch.full((2,), 0.5), 0)
    # v_c = x + 3, v_u = x: x + 2 * 3
    assert torch.equal(out, torch.full_like(x, 6.0))
    assert model.batches == [4]


def test_style_and_lyrics_scales_are_one_call_with_triple_batch() -> None:
    model = CountingModel()
    guided = GuidedVelocity(model, make_cond(), CFG(), scale=2.0, lyrics_scale=4.0)
    x = torch.zeros(2, 4, 6)
    out = guided(x, torch.full((2,), 0.5), 0)
    # v_u + 2 (v_nl - v_u) + 4 (v_full - v_nl) = 0 + 2 * 1 + 4 * 2
    assert torch.equal(out, torch.full_like(x, 10.0))
    assert model.batches == [6]


def test_guidance_interval_runs_one_call_per_step_and_guides_only_the_middle() -> None:
    model = CountingModel()
    guided = GuidedVelocity(model, make_cond(), CFG(), scale=3.0, schedule=GuidanceSchedule(10, interval=0.5))
    sample(guided, torch.zeros(2, 4, 6), torch.linspace(1.0, 0.0, 11, dtype=torch.float64), "euler")
    assert model.batches == [2, 2, 4, 4, 4, 4, 4, 2, 2, 2]


def test_cfg_zero_star_skips_the_model_on_zero_init_steps() -> None:
    model = CountingModel()
    guided = GuidedVelocity(model, make_cond(), CFGZeroStar(zero_init_steps=1), scale=3.0)
    noise = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2))
    sigmas = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    after_first = sample(guided, noise, sigmas, "euler", end_index=1)
    assert torch.equal(after_first, noise)
    assert model.batches == []
    sample(guided, noise, sigmas, "euler")
    assert model.batches == [4]


def test_no_guidance_is_a_single_conditional_pass() -> None:
    model = CountingModel()
    out = GuidedVelocity(model, make_cond(), None, scale=9.0)(torch.zeros(2, 4, 6), torch.ones(2), 0)
    assert model.batches == [2] and torch.equal(out, torch.full((2, 4, 6), 3.0))


def test_apg_momentum_resets_between_runs() -> None:
    model = CountingModel()
    guided = GuidedVelocity(model, make_cond(), APG(), scale=5.0)
    noise = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(3))
    sigmas = torch.linspace(1.0, 0.0, 5, dtype=torch.float64)
    first = sample(guided, noise, sigmas, "euler")
    second = sample(guided, noise, sigmas, "euler")
    assert torch.equal(first, second)


def test_batched_passes_match_separate_passes_on_a_real_dit() -> None:
    torch.manual_seed(0)
    dit = DiffusionTransformer(
        DiTConfig(
            latent_channels=4,
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            text_dim=8,
            lyric_vocab_size=16,
            lyric_dim=8,
            lyric_conv_layers=1,
            repa_layer=1,
            zero_init_output=False,
        )
    ).eval()
    with torch.no_grad():  # fresh DiTs zero-init their adaLN/cross-attention outputs: make style matter
        for param in dit.parameters():
            param.add_(0.2 * torch.randn_like(param))
    cond = make_cond()
    x = torch.randn(2, 4, 6)
    sigma = torch.full((2,), 0.7)
    with torch.no_grad():
        guided = GuidedVelocity(dit, cond, CFG(), scale=3.0, lyrics_scale=5.0)(x, sigma, 0)
        v_full = dit(x, sigma, cond).velocity
        v_nl = dit(x, sigma, cond.with_dropped(lyrics=True)).velocity
        v_u = dit(x, sigma, cond.with_dropped(style=True, lyrics=True)).velocity
    expected = v_u + 3.0 * (v_nl - v_u) + 5.0 * (v_full - v_nl)
    assert not torch.allclose(v_full, v_nl) and not torch.allclose(v_nl, v_u)
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-5)


def test_sample_guided_equals_the_composed_pieces() -> None:
    sigmas = torch.linspace(1.0, 0.0, 7, dtype=torch.float64)
    noise = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(4))
    composed = sample(
        GuidedVelocity(CountingModel(), make_cond(), APG(), 4.0, 2.0, GuidanceSchedule(6, 0.5, "cosine")),
        noise,
        sigmas,
        "heun",
    )
    one_call = sample_guided(
        CountingModel(),
        make_cond(),
        noise,
        sigmas,
        "heun",
        guidance=APG(),
        scale=4.0,
        lyrics_scale=2.0,
        interval=0.5,
        decay="cosine",
    )
    assert torch.equal(composed, one_call)
