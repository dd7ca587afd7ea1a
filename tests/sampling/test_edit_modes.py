"""Retake, repaint, extend, audio2audio and the crossfade, on toy velocity fields."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.edits import (
    apply_crossfade,
    audio2audio,
    audio2audio_start,
    crossfade_weights,
    extend,
    extend_latent,
    frame_mask,
    repaint,
    repaint_start_index,
    retake_noise,
)

GRID = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64)


def randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def toward(target: Tensor):
    """The exact field of a point mass at ``target``: v = (x - target) / sigma (x_sigma = (1-s) target + s n)."""

    def field(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        return (x - target) / sigma.view(-1, 1, 1).to(x.dtype)

    return field


def swirl(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
    """An arbitrary field that mixes frames, so kept frames would drift if not reset."""
    return x.roll(1, dims=-1) - 0.3 * x


def test_retake_variance_zero_is_the_original_bit_for_bit() -> None:
    seed_noise, new_noise = randn(2, 4, 16, seed=0), randn(2, 4, 16, seed=1)
    assert torch.equal(retake_noise(seed_noise, new_noise, 0.0), seed_noise)
    torch.testing.assert_close(retake_noise(seed_noise, new_noise, 1.0), new_noise)


def test_retake_mix_by_hand() -> None:
    # theta = pi / 4: cos = sin = 0.70710678
    out = retake_noise(torch.tensor([1.0, 2.0]), torch.tensor([0.0, -2.0]), 0.5)
    torch.testing.assert_close(out, torch.tensor([0.70710678, 0.0]))
    with pytest.raises(RefrainInputError, match="retake_variance"):
        retake_noise(torch.zeros(1), torch.zeros(1), 1.5)


def test_frame_mask_floor_start_ceil_end() -> None:
    # 2 frames/s: [1.0 s, 2.2 s) -> frames floor(2) = 2 .. ceil(4.4) = 5
    assert frame_mask(8, 1.0, 2.2, 2.0).nonzero().flatten().tolist() == [2, 3, 4]
    with pytest.raises(RefrainInputError, match="repaint_start"):
        frame_mask(8, 5.0, 6.0, 2.0)


def test_repaint_start_index() -> None:
    assert [repaint_start_index(10, v) for v in (1.0, 0.5, 0.25, 0.0)] == [0, 5, 7, 10]


def test_repaint_keeps_outside_frames_exactly_and_resets_every_step() -> None:
    x_src, noise = randn(1, 2, 8, seed=0), randn(1, 2, 8, seed=1)
    mask = torch.zeros(8, dtype=torch.bool)
    mask[3:6] = True
    seen: list[tuple[int, bool]] = []

    def check(step_index: int, x: Tensor, sigma_next: float) -> None:
        expected = (1.0 - sigma_next) * x_src + sigma_next * noise if sigma_next > 0 else x_src
        seen.append((step_index, torch.equal(x[..., ~mask], expected[..., ~mask])))

    out = repaint(swirl, x_src, noise, mask, GRID, variance=1.0, callback=check)
    assert torch.equal(out[..., ~mask], x_src[..., ~mask])
    assert not torch.allclose(out[..., mask], x_src[..., mask])
    assert seen == [(0, True), (1, True), (2, True), (3, True)]


def test_repaint_partial_variance_starts_mid_grid_from_noised_source() -> None:
    x_src, noise = randn(1, 2, 8, seed=2), randn(1, 2, 8, seed=3)
    first_inputs: list[tuple[int, Tensor]] = []

    def field(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        first_inputs.append((step_index, x.clone()))
        return swirl(x, sigma, step_index)

    repaint(field, x_src, noise, torch.ones(8, dtype=torch.bool), GRID, variance=0.5)
    # int(4 * 0.5) = 2: steps 2 and 3 only, starting from 0.5 x_src + 0.5 noise
    assert [i for i, _ in first_inputs] == [2, 3]
    torch.testing.assert_close(first_inputs[0][1], 0.5 * x_src + 0.5 * noise)


def test_repaint_with_the_exact_field_reconstructs_the_source() -> None:
    x_src, noise = randn(2, 3, 8, seed=4), randn(2, 3, 8, seed=5)
    mask = torch.tensor([[True] * 4 + [False] * 4, [False] * 4 + [True] * 4])
    out = repaint(toward(x_src), x_src, noise, mask, GRID, variance=1.0, solver="heun")
    torch.testing.assert_close(out, x_src, rtol=1e-5, atol=1e-5)


def test_extend_pads_and_keeps_the_source_in_the_middle() -> None:
    x_src = randn(1, 2, 5, seed=6)
    padded, mask = extend_latent(x_src, 2, 3)
    assert padded.shape == (1, 2, 10) and mask.tolist() == [True] * 2 + [False] * 5 + [True] * 3
    noise = randn(1, 2, 10, seed=7)
    out = extend(swirl, x_src, noise, 2, 3, GRID)
    assert torch.equal(out[..., 2:7], x_src)
    assert out[..., :2].abs().sum() > 0 and out[..., 7:].abs().sum() > 0
    with pytest.raises(RefrainInputError, match="extend noise"):
        extend(swirl, x_src, randn(1, 2, 5, seed=8), 2, 3, GRID)
    with pytest.raises(RefrainInputError, match="extend"):
        extend_latent(x_src, 0, 0)


def test_audio2audio_start_by_hand() -> None:
    z_ref, noise = torch.tensor([[[2.0, 4.0]]]), torch.tensor([[[0.0, -4.0]]])
    x, start = audio2audio_start(z_ref, noise, GRID, strength=0.5)
    assert start == 2 and x.tolist() == [[[1.0, 0.0]]]
    x, start = audio2audio_start(z_ref, noise, GRID, strength=0.4)  # sigma_max 0.6 -> grid 0.5
    assert start == 2
    x, start = audio2audio_start(z_ref, noise, GRID, strength=1.0)
    assert start == 4 and torch.equal(x, z_ref)
    x, start = audio2audio_start(z_ref, noise, GRID, strength=0.0)
    assert start == 0 and torch.equal(x, noise)


def test_audio2audio_follows_the_field_from_the_start_step() -> None:
    z_ref, noise = randn(1, 2, 6, seed=9), randn(1, 2, 6, seed=10)
    steps: list[int] = []

    def field(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        steps.append(step_index)
        return toward(z_ref)(x, sigma, step_index)

    out = audio2audio(field, z_ref, noise, GRID, strength=0.25)  # sigma_max 0.75 = grid[1]
    assert steps == [1, 2, 3]
    torch.testing.assert_close(out, z_ref, rtol=1e-5, atol=1e-5)


def test_crossfade_weights_shape() -> None:
    w = crossfade_weights(20, 5, 15, 3)
    assert w[:5].tolist() == [0.0] * 5 and w[15:].tolist() == [0.0] * 5
    assert w[8:12].tolist() == [1.0] * 4
    ramp = [0.5 - 0.5 * math.cos(math.pi * k / 4) for k in (1, 2, 3)]
    assert w[5:8].tolist() == pytest.approx(ramp) and w[12:15].tolist() == pytest.approx(ramp[::-1])
    # no ramp at the song edges: nothing to fade from
    assert crossfade_weights(10, 0, 10, 3).tolist() == [1.0] * 10
    with pytest.raises(RefrainInputError, match="crossfade"):
        crossfade_weights(10, 6, 4, 1)


def test_apply_crossfade_is_sample_exact_outside_the_region() -> None:
    original, generated = randn(1, 2, 48, seed=11), randn(1, 2, 48, seed=12)
    weights = crossfade_weights(48, 10, 30, 4)
    out = apply_crossfade(original, generated, weights)
    assert torch.equal(out[..., :10], original[..., :10]) and torch.equal(out[..., 30:], original[..., 30:])
    assert torch.equal(out[..., 14:26], generated[..., 14:26])
    # inside the ramp: a convex blend, weight of the new audio rising
    w = weights[10:14].to(original.dtype)
    torch.testing.assert_close(out[..., 10:14], (1 - w) * original[..., 10:14] + w * generated[..., 10:14])
