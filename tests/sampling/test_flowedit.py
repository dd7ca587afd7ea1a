"""FlowEdit: step bounds, identity edits, a hand-computed edit, and the call pattern."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.sampling.flowedit import flowedit, flowedit_bounds, flowedit_preset


def randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def offset(c: float):
    """v = x - c: the field of a constant pull, different c = different 'prompt'."""

    def field(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        return x - c

    return field


def test_bounds_follow_the_presets() -> None:
    # only lyrics: edit steps with n remaining in (0.6 N, N] -> i in [0, 4); plain sampling after
    assert flowedit_bounds(10, 0.6, 1.0) == (0, 4)
    # remix: edit while n in (2, 4] -> i in [6, 8)
    assert flowedit_bounds(10, 0.2, 0.4) == (6, 8)
    with pytest.raises(RefrainInputError, match="edit_n_min/edit_n_max"):
        flowedit_bounds(10, 0.5, 0.3)


def test_identical_prompts_leave_the_source_unchanged_bit_for_bit() -> None:
    x_src = randn(2, 3, 8, seed=0)
    field = offset(0.25)
    sigmas = torch.linspace(1.0, 0.0, 7, dtype=torch.float64)
    out = flowedit(field, field, x_src, sigmas, n_min=0.0, n_max=1.0, n_avg=2, generator=torch.Generator())
    assert torch.equal(out, x_src)


def test_identical_prompts_with_plain_tail_return_the_source() -> None:
    x_src = randn(1, 3, 8, seed=1)

    def exact(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
        return (x - x_src) / sigma.view(-1, 1, 1)

    sigmas = torch.linspace(1.0, 0.0, 11, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    out = flowedit_preset(exact, exact, x_src, sigmas, "only_lyrics", generator=generator)
    torch.testing.assert_close(out, x_src, rtol=1e-5, atol=1e-5)


def test_edit_by_hand() -> None:
    # source field x - 0, target field x - 1: delta = (z_tar - 1) - (z_src - 0) = (z_edit - x_src) - 1
    # step 0 (1 -> 0.5): delta = -1, z_edit = 1 + (-0.5)(-1) = 1.5
    # step 1 (0.5 -> 0): delta = 0.5 - 1 = -0.5, z_edit = 1.5 + (-0.5)(-0.5) = 1.75
    x_src = torch.ones(1, 1, 2)
    sigmas = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    out = flowedit(offset(0.0), offset(1.0), x_src, sigmas, n_min=0.0, n_max=1.0, generator=torch.Generator())
    torch.testing.assert_close(out, torch.full((1, 1, 2), 1.75))


def test_call_pattern_skip_edit_then_plain_target() -> None:
    calls: list[tuple[str, int]] = []

    def tagged(name: str, c: float):
        def field(x: Tensor, sigma: Tensor, step_index: int) -> Tensor:
            calls.append((name, step_index))
            return x - c

        return field

    sigmas = torch.linspace(1.0, 0.0, 11, dtype=torch.float64)
    flowedit(
        tagged("src", 0.0),
        tagged("tar", 1.0),
        randn(1, 2, 4, seed=2),
        sigmas,
        n_min=0.2,
        n_max=0.4,
        n_avg=2,
        generator=torch.Generator().manual_seed(1),
    )
    edit = [(name, i) for i in (6, 7) for _ in range(2) for name in ("tar", "src")]
    assert calls == edit + [("tar", 8), ("tar", 9)]


def test_same_seed_same_edit() -> None:
    x_src = randn(1, 2, 6, seed=3)
    sigmas = torch.linspace(1.0, 0.0, 9, dtype=torch.float64)

    def run(seed: int) -> Tensor:
        def src(x: Tensor, s: Tensor, i: int) -> Tensor:
            return torch.tanh(x) - 0.1

        def tar(x: Tensor, s: Tensor, i: int) -> Tensor:
            return torch.tanh(x.roll(1, -1)) + 0.2

        return flowedit_preset(
            src, tar, x_src, sigmas, "remix", "pingpong", generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))
    with pytest.raises(RefrainInputError, match="edit_preset"):
        flowedit_preset(offset(0.0), offset(0.0), x_src, sigmas, "karaoke")
