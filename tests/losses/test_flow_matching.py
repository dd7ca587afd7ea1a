"""Flow-matching objective: timestep law, masking, CFG dropout, masked spans, binned validation, overfit."""

from __future__ import annotations

import pytest
import torch

from refrain.errors import RefrainInputError
from refrain.losses.flow_matching import (
    FlowMatchingLoss,
    add_noise,
    binned_flow_loss,
    masked_mse,
    sample_sigma,
    shift_sigma,
)
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer

C, TEXT = 4, 8


def tiny_model(seed: int = 0, randomize: bool = False) -> DiffusionTransformer:
    torch.manual_seed(seed)
    model = DiffusionTransformer(
        DiTConfig(
            latent_channels=C,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            text_dim=TEXT,
            lyric_vocab_size=20,
            lyric_dim=16,
            lyric_conv_layers=1,
            speaker_dim=4,
            repa_layer=1,
        )
    )
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)
    return model


def make_batch(b: int = 3, t: int = 16, speaker: bool = False) -> tuple[torch.Tensor, DiTConditioning]:
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([t, t - 5, t - 9][:b])
    cond = DiTConditioning(
        style=torch.randn(b, 4, TEXT, generator=g),
        style_mask=torch.ones(b, 4, dtype=torch.bool),
        lyrics=torch.randint(0, 20, (b, t), generator=g),
        speaker=torch.randn(b, 4, generator=g) if speaker else None,
        frame_mask=torch.arange(t)[None] < lengths[:, None],
    )
    return torch.randn(b, C, t, generator=g), cond


def test_shift_map_values() -> None:
    sigma = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(shift_sigma(sigma, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    assert torch.equal(shift_sigma(sigma, 1.0), sigma)


def test_logit_normal_shift_statistics() -> None:
    g = torch.Generator().manual_seed(0)
    plain = sample_sigma(20000, shift=1.0, generator=g)
    shifted = sample_sigma(20000, shift=3.0, generator=g)
    assert float(shifted.min()) > 0.0 and float(shifted.max()) < 1.0
    assert abs(float(plain.median()) - 0.5) < 0.02
    median = float(shifted.median())
    print(f"\nmedian sigma: shift 1 -> {float(plain.median()):.3f}, shift 3 -> {median:.3f}")
    assert median > 0.5 and abs(median - 0.75) < 0.02  # the median maps through the shift: 3*.5/(1+2*.5)


def test_add_noise_and_target_convention() -> None:
    x0, noise = torch.randn(2, C, 5), torch.randn(2, C, 5)
    assert torch.equal(add_noise(x0, noise, torch.tensor([0.0, 0.0])), x0)
    assert torch.allclose(add_noise(x0, noise, torch.tensor([1.0, 1.0])), noise)
    # straight path: x_sigma moves along v = noise - x0
    s = torch.tensor([0.3, 0.3])
    assert torch.allclose(
        add_noise(x0, noise, s + 0.1) - add_noise(x0, noise, s), 0.1 * (noise - x0), atol=1e-6
    )


def test_masked_mse_ignores_padding() -> None:
    pred, target = torch.randn(2, C, 6), torch.randn(2, C, 6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    ref = masked_mse(pred, target, mask)
    target2 = target.clone()
    target2[1, :, 4:] = 1e3
    assert torch.equal(masked_mse(pred, target2, mask), ref)
    manual = ((pred - target) ** 2)[0].sum() + ((pred - target) ** 2)[1, :, :4].sum()
    assert torch.allclose(ref, manual / (10 * C))


def test_loss_ignores_padded_frames_of_the_latent() -> None:
    model = tiny_model(randomize=True).eval()
    loss_fn = FlowMatchingLoss(drop_style_prob=0, drop_lyrics_prob=0, drop_context_prob=0, masked_span_prob=0)
    x0, cond = make_batch()
    noise, sigma = torch.randn_like(x0), torch.tensor([0.2, 0.5, 0.9])
    ref = loss_fn(model, x0, cond, noise=noise, sigma=sigma).loss
    x2, noise2 = x0.clone(), noise.clone()
    x2[2, :, 7:] = 42.0
    noise2[1, :, 11:] = -42.0
    assert torch.allclose(loss_fn(model, x2, cond, noise=noise2, sigma=sigma).loss, ref, atol=1e-6)


def test_cfg_dropout_is_per_sample_and_independent() -> None:
    b = 400
    cond = DiTConditioning(
        style=torch.zeros(b, 1, TEXT),
        style_mask=torch.ones(b, 1, dtype=torch.bool),
        lyrics=torch.zeros(b, 4).long(),
        speaker=torch.ones(b, 4),
    )
    g = torch.Generator().manual_seed(0)
    out = FlowMatchingLoss(drop_style_prob=0.5, drop_lyrics_prob=0.5, drop_context_prob=0.0).apply_dropout(
        cond, g
    )
    for flag in (out.drop_style, out.drop_lyrics):
        assert 0.4 < flag.float().mean() < 0.6
    assert not out.drop_context.any()
    assert (out.drop_style != out.drop_lyrics).any()  # drawn independently
    dropped_speaker = (out.speaker == 0).all(dim=1)
    assert 0.4 < dropped_speaker.float().mean() < 0.6  # default speaker drop 0.5 via all-zero rows
    full = FlowMatchingLoss(1.0, drop_style_prob=1, drop_lyrics_prob=1, drop_context_prob=1).apply_dropout(
        cond, g
    )
    assert full.drop_style.all() and full.drop_lyrics.all() and full.drop_context.all()


def test_masked_span_gives_context_and_scores_only_the_span() -> None:
    x0, cond = make_batch(b=3)
    loss_fn = FlowMatchingLoss(masked_span_prob=1.0, span_min_fraction=0.2, span_max_fraction=0.6)
    new, loss_mask = loss_fn.apply_masked_span(x0, cond, torch.Generator().manual_seed(5))
    given = new.context_mask[:, 0] > 0
    assert torch.equal(loss_mask | given, cond.frame_mask)  # every valid frame is given or predicted
    assert not (loss_mask & given).any()
    for i in range(3):
        span = loss_mask[i].nonzero().flatten()
        n = int(cond.frame_mask[i].sum())
        assert 0.2 * n - 1 <= len(span) <= 0.6 * n + 1
        assert torch.equal(span, torch.arange(int(span[0]), int(span[-1]) + 1))  # one contiguous span
    assert torch.equal(new.context * new.context_mask, x0 * given[:, None].float())
    assert new.context_present().all()


def test_masked_span_keeps_existing_context() -> None:
    x0, cond = make_batch(b=3)
    cond.context = torch.full_like(x0, 7.0)
    cond.context_mask = torch.ones(3, 1, 16)
    cond.context_mask[2] = 0.0  # no given frame: counts as no context, so it is eligible
    new, loss_mask = FlowMatchingLoss(masked_span_prob=1.0).apply_masked_span(x0, cond)
    assert torch.equal(new.context[:2], cond.context[:2]) and torch.equal(loss_mask[:2], cond.frame_mask[:2])
    assert loss_mask[2].sum() < cond.frame_mask[2].sum()


def test_call_returns_named_terms_and_hidden() -> None:
    model = tiny_model()
    x0, cond = make_batch(speaker=True)
    out = FlowMatchingLoss(masked_span_prob=0.5)(
        model, x0, cond, generator=torch.Generator().manual_seed(0), return_hidden=True
    )
    assert set(out.terms) == {"flow"} and out.loss.ndim == 0 and out.loss.requires_grad
    assert out.hidden.shape == (3, 16, 32) and out.sigma.shape == (3,)
    # a fresh adaLN-zero model predicts zero velocity: the loss is E[(noise - x0)^2] ~ 2
    assert 1.0 < float(out.loss.detach()) < 3.0


def test_bad_probabilities_are_errors() -> None:
    with pytest.raises(RefrainInputError, match="drop_lyrics_prob"):
        FlowMatchingLoss(drop_lyrics_prob=1.5)
    with pytest.raises(RefrainInputError, match="shift"):
        FlowMatchingLoss(shift=0.0)


def test_binned_validation_loss() -> None:
    model = tiny_model(randomize=True)
    x0, cond = make_batch()
    a = binned_flow_loss(model, x0, cond, bins=4, generator=torch.Generator().manual_seed(1))
    b = binned_flow_loss(model, x0, cond, bins=4, generator=torch.Generator().manual_seed(1))
    assert list(a) == [
        "flow_sigma_0.00_0.25",
        "flow_sigma_0.25_0.50",
        "flow_sigma_0.50_0.75",
        "flow_sigma_0.75_1.00",
    ]
    assert all(torch.equal(a[k], b[k]) and a[k].isfinite() and not a[k].requires_grad for k in a)
    assert len({float(v) for v in a.values()}) == 4


def test_tiny_model_overfits_a_fixed_batch() -> None:
    model = tiny_model()
    x0, cond = make_batch(speaker=True)
    loss_fn = FlowMatchingLoss(
        drop_style_prob=0, drop_lyrics_prob=0, drop_context_prob=0, drop_speaker_prob=0, masked_span_prob=0
    )
    noise, sigma = torch.randn_like(x0), torch.tensor([0.3, 0.6, 0.8])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = loss_fn(model, x0, cond, noise=noise, sigma=sigma).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    print(f"\noverfit: loss {losses[0]:.3f} -> {losses[-1]:.3f} in 25 steps")
    assert losses[-1] < 0.3 * losses[0]


def test_span_sample_with_dropped_context_scores_every_frame() -> None:
    model = tiny_model()
    x0, cond = make_batch()
    both = FlowMatchingLoss(drop_context_prob=1.0, masked_span_prob=1.0)(model, x0, cond)
    assert torch.equal(both.loss_mask, cond.frame_mask) and both.cond.drop_context.all()
    span = FlowMatchingLoss(drop_context_prob=0.0, masked_span_prob=1.0)(model, x0, cond)
    assert span.loss_mask.sum() < cond.frame_mask.sum() and span.cond.context_present().all()
