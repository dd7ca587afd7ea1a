"""The inference sigma grid: linear in [1, sigma_min], shifted, ending at 0."""

from __future__ import annotations

import pytest
import torch

from refrain.errors import RefrainInputError
from refrain.sampling.schedules import shift_sigmas, sigma_schedule, start_index_for_sigma, timesteps


def test_unshifted_grid_is_linear_then_zero() -> None:
    sigmas = sigma_schedule(4, shift=1.0, sigma_min=0.25)
    assert sigmas.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_shift_three_by_hand() -> None:
    # s * sigma / (1 + (s - 1) sigma) with s = 3: 0.75 -> 2.25 / 2.5, 0.5 -> 1.5 / 2, 0.25 -> 0.75 / 1.5
    sigmas = sigma_schedule(4, shift=3.0, sigma_min=0.25)
    torch.testing.assert_close(sigmas, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0], dtype=torch.float64))


def test_default_grid_shape_and_ends() -> None:
    sigmas = sigma_schedule(60)
    assert sigmas.shape == (61,)
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert sigmas[-2].item() == pytest.approx(3 * 0.003 / (1 + 2 * 0.003))


def test_shift_keeps_end_points() -> None:
    ends = shift_sigmas(torch.tensor([0.0, 1.0], dtype=torch.float64), 5.0)
    assert ends.tolist() == [0.0, 1.0]


def test_timesteps_drop_final_zero() -> None:
    sigmas = sigma_schedule(3, shift=1.0, sigma_min=0.5)
    assert timesteps(sigmas, 1000.0).tolist() == [1000.0, 750.0, 500.0]


def test_start_index_for_sigma() -> None:
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64)
    assert start_index_for_sigma(sigmas, 1.0) == 0
    assert start_index_for_sigma(sigmas, 0.6) == 2
    assert start_index_for_sigma(sigmas, 0.5) == 2
    assert start_index_for_sigma(sigmas, 0.0) == 4


@pytest.mark.parametrize(
    ("kwargs", "subject"),
    [
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": 4, "shift": 0.0}, "shift"),
        ({"num_steps": 4, "sigma_min": 1.0}, "sigma_min/sigma_max"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs: dict, subject: str) -> None:
    with pytest.raises(RefrainInputError) as info:
        sigma_schedule(**kwargs)
    assert info.value.subject == subject and "Fix:" in str(info.value)
