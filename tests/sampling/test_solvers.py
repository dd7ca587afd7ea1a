"""Solvers against hand-computed steps on toy velocity fields, order of accuracy, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.solvers import euler_step, heun_step, pingpong_step, sample

C = torch.tensor([[[0.5, 0.5]]])
X = torch.tensor([[[1.0, 2.0]]])


def offset_field(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
    """v = x - c."""
    return x - C


def test_euler_step_by_hand() -> None:
    # v = [0.5, 1.5]; x + (0.5 - 1) v = [0.75, 1.25]
    out = euler_step(offset_field, X, 1.0, 0.5, 0)
    assert out.tolist() == [[[0.75, 1.25]]]


def test_heun_step_by_hand() -> None:
    # v1 = [0.5, 1.5]; x_e = [0.75, 1.25]; v2 = [0.25, 0.75]; mean = [0.375, 1.125]
    # x - 0.5 * mean = [0.8125, 1.4375]
    out = heun_step(offset_field, X, 1.0, 0.5, 0)
    assert out.tolist() == [[[0.8125, 1.4375]]]


def test_heun_last_step_to_zero_is_euler_with_one_call() -> None:
    calls = []

    def field(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        calls.append(sigma.tolist())
        return x - C

    out = heun_step(field, X, 0.5, 0.0, 3)
    # x - 0.5 * [0.5, 1.5]
    assert out.tolist() == [[[0.75, 1.25]]]
    assert calls == [[0.5]]


def test_pingpong_step_by_hand() -> None:
    # x0 = x - sigma v = [1 - 0.5, 2 - 1.5] = [0.5, 0.5]; then 0.5 * x0 + 0.5 * fresh noise
    noise = torch.randn(1, 1, 2, generator=torch.Generator().manual_seed(7))
    out = pingpong_step(offset_field, X, 1.0, 0.5, 0, torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, 0.25 + 0.5 * noise)
    assert pingpong_step(offset_field, X, 1.0, 0.0, 0, None).tolist() == [[[0.5, 0.5]]]


def test_euler_recovers_x0_in_one_step_on_straight_field() -> None:
    x0 = torch.tensor([[[0.25, -1.5, 3.0]]])
    noise = torch.tensor([[[1.0, 0.5, -2.0]]])

    def straight(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        return noise - x0

    out = sample(straight, noise, torch.tensor([1.0, 0.0], dtype=torch.float64), "euler")
    assert torch.equal(out, x0)


def _exp_error(solver: str, num_steps: int) -> float:
    """v = x, so x(sigma) = x(1) exp(sigma - 1) and x(0) = x(1) / e exactly."""
    x1 = torch.ones(1, 1, 1, dtype=torch.float64)
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    out = sample(lambda x, s, i: x, x1, sigmas, solver)
    return abs(out.item() - math.exp(-1.0))


def test_heun_is_second_order_and_euler_first_order() -> None:
    euler_ratio = _exp_error("euler", 10) / _exp_error("euler", 20)
    heun_ratio = _exp_error("heun", 10) / _exp_error("heun", 20)
    assert 1.8 < euler_ratio < 2.2
    assert 3.5 < heun_ratio < 4.6
    assert _exp_error("heun", 10) < _exp_error("euler", 10) / 10


def _mlp_field() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(3, 8, 1), torch.nn.Tanh(), torch.nn.Conv1d(8, 3, 1))


@pytest.mark.parametrize("solver", ["euler", "heun", "pingpong"])
def test_same_seed_gives_identical_samples(solver: str) -> None:
    net = _mlp_field()
    sigmas = torch.linspace(1.0, 0.0, 9, dtype=torch.float64)

    def run(seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(2, 3, 16, generator=generator)
        return sample(lambda x, s, i: net(x) * s.view(-1, 1, 1), noise, sigmas, solver, generator=generator)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_sample_start_index_callback_and_step_indices() -> None:
    seen: list[int] = []
    resets: list[tuple[int, float]] = []

    def field(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        seen.append(step_index)
        return torch.ones_like(x)

    def callback(step_index: int, x: Tensor, sigma_next: float) -> Tensor | None:
        resets.append((step_index, sigma_next))
        return torch.zeros_like(x) if step_index == 2 else None

    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64)
    out = sample(field, torch.zeros(1, 1, 1), sigmas, "euler", start_index=1, callback=callback)
    # steps 1, 2, 3 run; the reset after step 2 zeroes x; step 3 then adds (0 - 0.25) * 1
    assert seen == [1, 2, 3]
    assert resets == [(1, 0.5), (2, 0.25), (3, 0.0)]
    assert out.item() == -0.25


def test_unknown_solver_is_a_clear_error() -> None:
    with pytest.raises(RefrainInputError, match="solver: unknown solver 'rk4'.*Fix: use one of"):
        sample(offset_field, X, torch.tensor([1.0, 0.0]), "rk4")
