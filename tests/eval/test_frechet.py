"""Fréchet distance: zero on itself, symmetric, monotone in added noise, matches the closed form."""

from __future__ import annotations

import numpy as np
import pytest

from refrain.errors import RefrainInputError
from refrain.eval.frechet import GaussianStats, frechet_distance


def test_zero_for_the_same_set_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((200, 8)), rng.standard_normal((150, 8)) * 1.5 + 0.3
    sa, sb = GaussianStats.of(a), GaussianStats.of(b)
    assert frechet_distance(sa, sa) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(sa, sb) == pytest.approx(frechet_distance(sb, sa), rel=1e-9)


def test_grows_monotonically_with_noise_level() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal((300, 6))
    noise = rng.standard_normal((300, 6))
    ref = GaussianStats.of(base)
    values = [frechet_distance(ref, GaussianStats.of(base + level * noise)) for level in (0.1, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] > 0


def test_matches_closed_form_for_diagonal_gaussians() -> None:
    a = GaussianStats(np.zeros(3), np.diag([1.0, 4.0, 9.0]), 10)
    b = GaussianStats(np.array([1.0, 0.0, 2.0]), np.diag([4.0, 4.0, 1.0]), 10)
    # |mu|^2 + sum (sqrt(s_a) - sqrt(s_b))^2 for commuting covariances
    expected = 5.0 + (1 - 2) ** 2 + (2 - 2) ** 2 + (3 - 1) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_needs_two_embeddings() -> None:
    with pytest.raises(RefrainInputError, match="at least 2"):
        GaussianStats.of(np.zeros((1, 4)), "generated")
