"""DiTConditioning batch operations and the null-embedding swaps of ConditionEmbedder."""

from __future__ import annotations

import pytest
import torch

from refrain.errors import RefrainInputError
from refrain.models.dit.conditioning import ConditionEmbedder, DiTConditioning

TEXT, SPK, C, D = 12, 6, 4, 16


def make_cond(
    b: int = 2, t: int = 10, s: int = 5, speaker: bool = False, context: bool = False
) -> DiTConditioning:
    g = torch.Generator().manual_seed(b * 100 + t)
    return DiTConditioning(
        style=torch.randn(b, s, TEXT, generator=g),
        style_mask=torch.ones(b, s, dtype=torch.bool),
        lyrics=torch.randint(1, 30, (b, t), generator=g),
        speaker=torch.randn(b, SPK, generator=g) if speaker else None,
        context=torch.randn(b, C, t, generator=g) if context else None,
    )


def embedder(**kw: object) -> ConditionEmbedder:
    torch.manual_seed(0)
    args = dict(
        hidden_size=D, latent_channels=C, text_dim=TEXT, lyric_vocab_size=30, lyric_dim=8, lyric_conv_layers=1
    )
    args.update(kw)
    return ConditionEmbedder(**args).eval()


def test_defaults_fill_masks_and_flags() -> None:
    cond = make_cond(context=True)
    assert cond.frame_mask.dtype == torch.bool and cond.frame_mask.all()
    assert cond.frame_mask.shape == (2, 10)
    for flag in (cond.drop_style, cond.drop_lyrics, cond.drop_context):
        assert flag.shape == (2,) and not flag.any()
    assert cond.context_mask.shape == (2, 1, 10) and bool((cond.context_mask == 1).all())
    cond.validate(torch.zeros(2, C, 10))


def test_with_dropped_sets_and_keeps_flags() -> None:
    cond = make_cond()
    cond.drop_lyrics[0] = True
    out = cond.with_dropped(style=True, context=False)
    assert out.drop_style.all() and not out.drop_context.any()
    assert out.drop_lyrics.tolist() == [True, False]  # None keeps the flags as they were
    assert not cond.drop_style.any()  # the original is unchanged
    assert out.style is cond.style


def test_repeat_tiles_batch() -> None:
    cond = make_cond(b=2, speaker=True, context=True)
    rep = cond.repeat(3)
    assert rep.batch_size == 6
    assert torch.equal(rep.lyrics[2:4], cond.lyrics) and torch.equal(rep.speaker[4:], cond.speaker)
    assert rep.context_mask.shape == (6, 1, 10)


def test_cat_pads_prompts_and_fills_optionals() -> None:
    a = make_cond(b=1, s=3, speaker=True, context=True)
    b = make_cond(b=2, s=6)
    both = DiTConditioning.cat([a, b])
    assert both.style.shape == (3, 6, TEXT)
    assert both.style_mask.tolist()[0] == [True] * 3 + [False] * 3
    assert torch.equal(both.speaker[1:], torch.zeros(2, SPK))
    assert torch.equal(both.context_mask[1:], torch.zeros(2, 1, 10))
    assert both.context_present().tolist() == [True, False, False]
    both.validate()


def test_to_casts_floats_only() -> None:
    cond = make_cond(context=True).to("cpu", dtype=torch.float64)
    assert cond.style.dtype == torch.float64 and cond.context.dtype == torch.float64
    assert cond.lyrics.dtype == torch.long and cond.style_mask.dtype == torch.bool


def test_validate_names_the_bad_field() -> None:
    cond = make_cond()
    cond.frame_mask = torch.ones(2, 9, dtype=torch.bool)
    with pytest.raises(RefrainInputError, match=r"DiTConditioning.frame_mask: shape \(2, 9\)"):
        cond.validate()
    with pytest.raises(RefrainInputError, match="latent shape"):
        make_cond().validate(torch.zeros(2, C, 11))


def test_drop_style_swaps_in_null_style_pooled_and_speaker() -> None:
    emb = embedder(speaker_dim=SPK)
    cond = make_cond(speaker=True)
    cond.drop_style[1] = True
    out = emb(cond)
    assert torch.equal(out.style[1], emb.null_style.expand(5, D))
    assert out.style_mask[1].tolist() == [True, False, False, False, False]
    assert torch.allclose(out.vector[1], emb.null_pooled + emb.null_speaker)
    assert not torch.allclose(out.vector[0], emb.null_pooled + emb.null_speaker)
    # a dropped sample's output does not depend on its prompt
    other = make_cond(speaker=True)
    other.style = other.style + 5.0
    other.speaker = other.speaker * 3.0
    other.drop_style[1] = True
    assert torch.equal(emb(other).vector[1], out.vector[1])


def test_empty_prompt_and_zero_speaker_count_as_absent() -> None:
    emb = embedder(speaker_dim=SPK)
    cond = make_cond(speaker=True)
    cond.style_mask[0] = False
    cond.speaker[0] = 0.0
    out = emb(cond)
    assert torch.equal(out.style[0], emb.null_style.expand(5, D))
    assert torch.allclose(out.vector[0], emb.null_pooled + emb.null_speaker)
    assert out.vector.isfinite().all()


def test_drop_lyrics_swaps_in_null_lyrics() -> None:
    emb = embedder(use_context=False)
    cond = make_cond()
    cond.drop_lyrics[0] = True
    cond.frame_mask[0, 7:] = False
    frame = emb(cond).frame
    assert torch.equal(frame[0, :7], emb.null_lyrics.expand(7, D))
    assert torch.equal(frame[0, 7:], torch.zeros(3, D))  # padded frames carry nothing
    assert not torch.allclose(frame[1, 0], emb.null_lyrics)


def test_context_absent_equals_dropped_equals_empty_mask() -> None:
    emb = embedder()
    plain = make_cond()
    with_ctx = make_cond(context=True)
    base = emb(plain).frame
    dropped = emb(with_ctx.with_dropped(context=True)).frame
    empty = make_cond(context=True)
    empty.context_mask = torch.zeros_like(empty.context_mask)
    assert torch.allclose(base, dropped) and torch.allclose(base, emb(empty).frame)
    assert not torch.allclose(base, emb(with_ctx).frame)


def test_context_without_context_input_is_an_error() -> None:
    with pytest.raises(RefrainInputError, match="use_context"):
        embedder(use_context=False)(make_cond(context=True))


def test_lyric_ids_beyond_vocab_are_an_error() -> None:
    cond = make_cond()
    cond.lyrics[0, 0] = 30
    with pytest.raises(RefrainInputError, match="lyric_vocab_size"):
        embedder()(cond)
