"""The sampler's per-step math in fewer tensor passes: same results as the textbook formulas.

The solvers, CFG and APG were rewritten to cut the time the sampler spends outside the network
(``torch.add(x, v, alpha=dt)`` for ``x + dt * v``; APG's projection as one ``addcmul``, on the CPU its
dot products from one batched product and its scalars in Python; ping-pong's noise drawn once per run). These tests hold
them to the plain formulas within 1e-6, and the guided sampler's reuse of the prepared guidance batch
for its unguided steps to ``prepare`` of the conditional rows (the encoders ran on batches of another
size there, so equal to float rounding).
"""

from __future__ import annotations

import pytest
import torch
from helpers.lora import VOCAB, tiny_dit
from torch import Tensor

from refrain.models.dit.conditioning import DiTConditioning
from refrain.sampling.guidance import CFG, MomentumBuffer, apg, cfg
from refrain.sampling.guided import GuidedVelocity
from refrain.sampling.solvers import euler_step, heun_step, pingpong_step


def _reference_apg(
    v_c: Tensor, v_u: Tensor, scale: float, buffer: MomentumBuffer | None, thr: float, eta: float
):
    """APG as written before: momentum, clip, unit vector, parallel and orthogonal parts."""
    d = v_c - v_u
    if buffer is not None:
        buffer.previous, d = (
            buffer.running_average,
            (d if buffer.running_average is None else d + buffer.momentum * buffer.running_average),
        )
        buffer.running_average = d
    dims = (-2, -1)
    if thr > 0:
        d = d * torch.clamp(thr / d.norm(p=2, dim=dims, keepdim=True), max=1.0)
    unit = v_c / v_c.norm(p=2, dim=dims, keepdim=True).clamp_min(1e-12)
    parallel = (d * unit).sum(dim=dims, keepdim=True) * unit
    return v_c + (scale - 1.0) * (d - parallel + eta * parallel)


def _pair(seed: int, batch: int = 3) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 50, generator=g), torch.randn(batch, 4, 50, generator=g)


@pytest.mark.parametrize("threshold", [0.0, 2.5, 1e6])  # off, binding, loose
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("batch", [1, 3])  # the CPU path's Python scalars (one song) and per-row tensors
def test_apg_matches_the_textbook_form_over_steps(threshold: float, eta: float, batch: int) -> None:
    fast, slow = MomentumBuffer(-0.75), MomentumBuffer(-0.75)
    for step in range(4):  # momentum carried across steps
        v_c, v_u = _pair(step, batch)
        got = apg(v_c, v_u, 15.0, fast, threshold, eta, step_index=step)
        want = _reference_apg(v_c, v_u, 15.0, slow, threshold, eta)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)  # values of order 10-100
        torch.testing.assert_close(fast.running_average, slow.running_average, rtol=1e-6, atol=1e-6)


def test_apg_with_a_zero_conditional_velocity_keeps_the_whole_direction() -> None:
    v_u = _pair(0)[1]
    got = apg(torch.zeros_like(v_u), v_u, 3.0, None, 0.0)
    torch.testing.assert_close(got, 2.0 * -v_u, rtol=0, atol=1e-6)


def test_cfg_and_solver_steps_match_the_plain_formulas() -> None:
    v_c, v_u = _pair(1)
    torch.testing.assert_close(cfg(v_c, v_u, 4.0), v_u + 4.0 * (v_c - v_u), rtol=1e-6, atol=1e-6)
    x, field = _pair(2)

    def velocity(z: Tensor, sigma: Tensor, index: int) -> Tensor:
        return field * sigma[:, None, None] + 0.1 * z

    s, s_next = 0.7, 0.4
    v = velocity(x, torch.full((3,), s), 0)
    torch.testing.assert_close(euler_step(velocity, x, s, s_next, 0), x + (s_next - s) * v, rtol=0, atol=1e-6)
    x_e = x + (s_next - s) * v
    v_end = velocity(x_e, torch.full((3,), s_next), 0)
    want = x + (s_next - s) * (0.5 * (v + v_end))
    torch.testing.assert_close(heun_step(velocity, x, s, s_next, 0), want, rtol=0, atol=1e-6)
    got = pingpong_step(velocity, x, s, s_next, 0, torch.Generator().manual_seed(9))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    want = (1.0 - s_next) * (x - s * v) + s_next * noise
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(pingpong_step(velocity, x, s, 0.0, 0), x - s * v, rtol=0, atol=1e-6)


def _cond(batch: int = 2, frames: int = 12) -> DiTConditioning:
    g = torch.Generator().manual_seed(4)
    frame_mask = torch.ones(batch, frames, dtype=torch.bool)
    frame_mask[1, 9:] = False
    return DiTConditioning(
        style=torch.randn(batch, 3, 8, generator=g),
        style_mask=torch.tensor([[True, True, True], [True, True, False]]),
        lyrics=torch.randint(1, VOCAB, (batch, frames), generator=g),
        frame_mask=frame_mask,
    )


@pytest.mark.parametrize("lyrics_scale", [None, 3.0])  # two and three guidance passes
def test_unguided_steps_reuse_the_prepared_guidance_batch(lyrics_scale: float | None) -> None:
    model = tiny_dit().eval()
    for p in model.parameters():  # zero-initialised heads would hide a difference
        p.data.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    cond = _cond()
    velocity = GuidedVelocity(model, cond, CFG(), 3.0, lyrics_scale)
    single = velocity.conditioning("single")
    direct = model.prepare(cond)
    assert single.all_frames_valid is direct.all_frames_valid is False
    for got, want in zip(
        (single.embedded.frame, single.embedded.style, single.embedded.style_mask, single.embedded.vector),
        (direct.embedded.frame, direct.embedded.style, direct.embedded.style_mask, direct.embedded.vector),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert torch.equal(single.cond.frame_mask, cond.frame_mask) and torch.equal(
        single.cond.lyrics, cond.lyrics
    )
    x = torch.randn(2, model.latent_channels, 12, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((2,), 0.5)
    with torch.no_grad():
        got, want = model(x, sigma, single).velocity, model(x, sigma, direct).velocity
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "dtype", "predrawn"),
    [((1, 16, 50), torch.float32, True), ((2, 8, 6), torch.float64, True), ((1, 5, 7), torch.float32, False)],
)
@pytest.mark.parametrize("start", [0, 3])
def test_pingpong_draws_the_step_by_step_noise_stream_in_one_call(
    shape: tuple[int, ...], dtype: torch.dtype, predrawn: bool, start: int
) -> None:
    """sample() draws a ping-pong run's noise at once: the same values in the same order as each step
    drawing its own (so seeds and sidecars give the songs they gave), and the generator ends equal."""
    from refrain.sampling.solvers import NoiseDraws, predraw, sample

    field = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)

    def velocity(z: Tensor, sigma: Tensor, index: int) -> Tensor:
        return field * sigma.view(-1, 1, 1) + 0.1 * z

    x = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    sigmas = torch.linspace(1.0, 0.0, 9, dtype=torch.float64)
    assert isinstance(predraw(x, 8, torch.Generator()), NoiseDraws) == predrawn
    fast_gen = torch.Generator().manual_seed(3)
    fast = sample(velocity, x, sigmas, "pingpong", start_index=start, generator=fast_gen)
    slow_gen = torch.Generator().manual_seed(3)
    slow, values = x, sigmas.tolist()
    for index in range(start, len(values) - 1):
        slow = pingpong_step(velocity, slow, values[index], values[index + 1], index, slow_gen)
    assert torch.equal(fast, slow)
    assert torch.equal(fast_gen.get_state(), slow_gen.get_state())


@pytest.mark.parametrize(("batch", "dtype"), [(1, torch.float32), (2, torch.float32), (1, torch.float64)])
def test_sample_hands_out_the_sigmas_torch_full_gives(batch: int, dtype: torch.dtype) -> None:
    """sample() builds the run's sigma tensors in one go (rows of one tensor); each step's sigma equals,
    bit for bit, the ``torch.full`` a step outside a run makes, and guidance passes one song's sigma
    repeated to every row of its batched call."""
    from refrain.sampling.solvers import sample, sigma_batch

    seen: list[Tensor] = []

    def velocity(z: Tensor, sigma: Tensor, index: int) -> Tensor:
        seen.append(sigma.clone())
        return 0.1 * z

    x = torch.randn(batch, 3, 16, dtype=dtype, generator=torch.Generator().manual_seed(0))
    values = [1.0, 0.8133, 0.5, 1 / 3, 0.0]
    sample(velocity, x, torch.tensor(values, dtype=torch.float64), "heun")
    expected = [v for i, v in enumerate(values[:-1]) for v in (v, values[i + 1]) if v != 0.0]
    assert len(seen) == len(expected)
    for got, value in zip(seen, expected, strict=True):
        want = sigma_batch(x, value)  # outside a run: torch.full
        assert got.dtype == want.dtype and torch.equal(got, want)

    class Recorder(torch.nn.Module):
        def forward(self, z: Tensor, sigma: Tensor, cond: object) -> Tensor:
            seen.append(sigma.clone())
            return z

    seen.clear()
    cond = DiTConditioning(
        style=torch.randn(batch, 3, 8),
        style_mask=torch.ones(batch, 3, dtype=torch.bool),
        lyrics=torch.ones(batch, 6, dtype=torch.long),
    )
    GuidedVelocity(Recorder(), cond, CFG(), 3.0, 2.0)(torch.randn(batch, 3, 6), torch.full((batch,), 0.5), 0)
    assert torch.equal(seen[0], torch.full((3 * batch,), 0.5))


def test_one_song_apg_scalars_match_the_batched_product() -> None:
    """One song takes its three dot products from ``dot`` calls, several from one batched product:
    the same scalars to float rounding."""
    from refrain.sampling.apg_cpu import apg_scalars

    d, c = _pair(7)
    batched = apg_scalars(d, c, 2.5, 0.0)
    for row in range(3):
        (single,) = apg_scalars(d[row : row + 1], c[row : row + 1], 2.5, 0.0)
        assert single == pytest.approx(batched[row], rel=1e-6)
