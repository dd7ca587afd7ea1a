"""gradients_finite: the one non-finite-gradient check the DiT task and the fault guard share."""

from __future__ import annotations

import torch

from refrain.training.faults import gradients_finite


def test_gradients_finite_sees_any_inf_or_nan_and_ignores_missing_grads() -> None:
    a, b, frozen = (torch.nn.Parameter(torch.ones(3)) for _ in range(3))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b, frozen]}], lr=0.1)
    assert gradients_finite(optimizer)  # no gradient yet: nothing to refuse
    (a.sum() + 2 * b.sum()).backward()
    assert gradients_finite(optimizer)
    b.grad[1] = float("inf")
    assert not gradients_finite(optimizer)
    b.grad[1] = float("nan")
    assert not gradients_finite(optimizer)
