"""Guidance formulas against hand-computed numbers; interval and decay schedules."""

from __future__ import annotations

import math

import pytest
import torch

from refrain.errors import RefrainInputError
from refrain.sampling.guidance import (
    APG,
    CFG,
    CFGZeroStar,
    GuidanceSchedule,
    MomentumBuffer,
    apg,
    cfg,
    cfg_zero_star,
    style_lyrics_cfg,
)


def t(*values: float) -> torch.Tensor:
    """A (1, 1, T) velocity: one sample, one channel."""
    return torch.tensor([[list(values)]], dtype=torch.float64)


def test_cfg_by_hand() -> None:
    # v_u + 3 (v_c - v_u) = [0.5 + 1.5, 1 + 3]
    assert cfg(t(1.0, 2.0), t(0.5, 1.0), 3.0).tolist() == [[[2.0, 4.0]]]


def test_style_lyrics_combinator_by_hand() -> None:
    # 0 + 2 (2 - 0) + 4 (3 - 2) = 8
    assert style_lyrics_cfg(t(3.0), t(2.0), t(0.0), 2.0, 4.0).tolist() == [[[8.0]]]
    # equal scales collapse to plain CFG whatever the style-only velocity is
    torch.testing.assert_close(style_lyrics_cfg(t(3.0), t(-7.0), t(1.0), 5.0, 5.0), cfg(t(3.0), t(1.0), 5.0))


def test_cfg_object_two_scales_matches_combinator() -> None:
    guide = CFG()
    assert guide(t(3.0), t(0.0), 2.0, 0, v_no_lyrics=t(2.0), lyrics_scale=4.0).tolist() == [[[8.0]]]
    assert guide(t(1.0, 2.0), t(0.5, 1.0), 3.0, 0).tolist() == [[[2.0, 4.0]]]


def test_cfg_zero_star_by_hand() -> None:
    # sample 0: <v_c, v_u> = 2, ||v_u||^2 = 4, alpha 0.5, alpha v_u = [1, 0]; [1, 0] + 3 [0, 1] = [1, 3]
    # sample 1: alpha = 2 / 1 = 2, alpha v_u = [0, 2] = v_c, so v = [0, 2]
    v_cond = torch.tensor([[[1.0, 1.0]], [[0.0, 2.0]]], dtype=torch.float64)
    v_uncond = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    out = cfg_zero_star(v_cond, v_uncond, 3.0, step_index=1, zero_init_steps=1)
    torch.testing.assert_close(out, torch.tensor([[[1.0, 3.0]], [[0.0, 2.0]]], dtype=torch.float64))


def test_cfg_zero_star_zero_init_steps() -> None:
    v_cond, v_uncond = t(1.0, 1.0), t(2.0, 0.0)
    for step in (0, 1):
        assert cfg_zero_star(v_cond, v_uncond, 3.0, step, zero_init_steps=2).tolist() == [[[0.0, 0.0]]]
    assert cfg_zero_star(v_cond, v_uncond, 3.0, 2, zero_init_steps=2).abs().sum() > 0
    guide = CFGZeroStar(zero_init_steps=1)
    assert guide.zero_velocity(0) and not guide.zero_velocity(1)


def test_apg_projection_by_hand() -> None:
    # d = [3, 0]; unit(v_c) = [0.6, 0.8]; d.u = 1.8; parallel = [1.08, 1.44]; orth = [1.92, -1.44]
    # w = 2: v_c + orth = [4.92, 2.56]
    out = apg(t(3.0, 4.0), t(0.0, 4.0), 2.0, momentum=None, norm_threshold=100.0)
    torch.testing.assert_close(out, t(4.92, 2.56))


def test_apg_norm_clip_by_hand() -> None:
    # ||d|| = 3 > 1, so d -> [1, 0]; d.u = 0.6; parallel = [0.36, 0.48]; orth = [0.64, -0.48]
    out = apg(t(3.0, 4.0), t(0.0, 4.0), 2.0, momentum=None, norm_threshold=1.0)
    torch.testing.assert_close(out, t(3.64, 3.52))


def test_apg_momentum_by_hand() -> None:
    # step 1: avg = d = [3, 0]; step 2: avg = d - 0.75 [3, 0] = [0.75, 0]
    # d.u = 0.45; parallel = [0.27, 0.36]; orth = [0.48, -0.36]; v = [3.48, 3.64]
    buffer = MomentumBuffer(-0.75)
    apg(t(3.0, 4.0), t(0.0, 4.0), 2.0, momentum=buffer, norm_threshold=100.0)
    out = apg(t(3.0, 4.0), t(0.0, 4.0), 2.0, momentum=buffer, norm_threshold=100.0)
    torch.testing.assert_close(out, t(3.48, 3.64))
    buffer.reset()
    assert buffer.running_average is None


def test_apg_eta_keeps_parallel_part() -> None:
    # eta = 1 keeps all of d, so APG without clip or momentum is plain CFG written around v_c
    out = apg(t(3.0, 4.0), t(0.0, 4.0), 2.0, momentum=None, norm_threshold=0.0, eta=1.0)
    torch.testing.assert_close(out, cfg(t(3.0, 4.0), t(0.0, 4.0), 2.0))


def test_apg_object_two_scales_equal_single_when_clip_is_loose() -> None:
    gen = torch.Generator().manual_seed(0)
    v_full, v_nl, v_u = (torch.randn(2, 4, 6, generator=gen, dtype=torch.float64) for _ in range(3))
    single, double = APG(norm_threshold=1e6), APG(norm_threshold=1e6)
    for step in range(3):  # momentum is linear too, so the equality holds across steps
        a = single(v_full, v_u, 7.0, step)
        b = double(v_full, v_u, 7.0, step, v_no_lyrics=v_nl, lyrics_scale=7.0)
        torch.testing.assert_close(a, b)
    assert len(double.buffers) == 2
    double.reset()
    assert double.buffers == []


def test_cfg_zero_star_two_scales_equal_single() -> None:
    gen = torch.Generator().manual_seed(1)
    v_full, v_nl, v_u = (torch.randn(2, 4, 6, generator=gen, dtype=torch.float64) for _ in range(3))
    guide = CFGZeroStar(zero_init_steps=1)
    torch.testing.assert_close(
        guide(v_full, v_u, 4.0, 3, v_no_lyrics=v_nl, lyrics_scale=4.0), guide(v_full, v_u, 4.0, 3)
    )
    assert guide(v_full, v_u, 4.0, 0, v_no_lyrics=v_nl, lyrics_scale=2.0).abs().sum() == 0


def test_guidance_interval_bounds() -> None:
    assert GuidanceSchedule(60, interval=0.5).bounds == (15, 45)
    schedule = GuidanceSchedule(10, interval=0.5)
    assert [i for i in range(10) if schedule.is_guided(i)] == [2, 3, 4, 5, 6]
    assert [schedule.scale_at(i, 7.0) for i in (1, 2, 6, 7)] == [None, 7.0, 7.0, None]
    assert not any(GuidanceSchedule(10, interval=0.0).is_guided(i) for i in range(10))
    assert all(GuidanceSchedule(10).is_guided(i) for i in range(10))


def test_guidance_decay_linear_and_cosine() -> None:
    linear = GuidanceSchedule(5, decay="linear")
    assert [linear.scale_at(i, 5.0) for i in range(5)] == [5.0, 4.0, 3.0, 2.0, 1.0]
    cosine = GuidanceSchedule(5, decay="cosine", min_scale=1.0)
    expected = [
        5.0,
        1.0 + 2.0 * (1.0 + math.cos(math.pi / 4)),
        3.0,
        1.0 + 2.0 * (1.0 - math.cos(math.pi / 4)),
        1.0,
    ]
    assert [cosine.scale_at(i, 5.0) for i in range(5)] == pytest.approx(expected)
    # decay runs over the guided steps only
    inner = GuidanceSchedule(10, interval=0.5, decay="linear", min_scale=3.0)
    assert [inner.scale_at(i, 7.0) for i in range(2, 7)] == [7.0, 6.0, 5.0, 4.0, 3.0]


@pytest.mark.parametrize(
    ("kwargs", "subject"),
    [
        ({"interval": 1.5}, "guidance_interval"),
        ({"decay": "exp"}, "guidance_decay"),
        ({"num_steps": 0}, "num_steps"),
    ],
)
def test_schedule_rejects_bad_settings(kwargs: dict, subject: str) -> None:
    args = {"num_steps": 10, **kwargs}
    with pytest.raises(RefrainInputError) as info:
        GuidanceSchedule(**args)
    assert info.value.subject == subject


def test_apg_momentum_advances_once_per_step_index() -> None:
    # a second evaluation at step 1 (Heun's end slope) builds on step 0's average, not on itself
    buffer = MomentumBuffer(-0.75)
    buffer.update(t(4.0), step_index=0)
    assert buffer.update(t(2.0), step_index=1).tolist() == [[[-1.0]]]  # 2 - 0.75 * 4
    assert buffer.update(t(6.0), step_index=1).tolist() == [[[3.0]]]  # 6 - 0.75 * 4
    assert buffer.update(t(1.0), step_index=2).tolist() == [[[-1.25]]]  # 1 - 0.75 * 3
