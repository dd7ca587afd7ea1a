"""EMA of the generator weights: the update rule, warm-up, and that it survives a state_dict round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from refrain.training.ema import EMA


def test_update_is_an_exponential_average_with_warmup() -> None:
    source, twin = nn.Linear(3, 2), nn.Linear(3, 2)
    ema = EMA(source, twin, decay=0.5, warmup=False)
    assert torch.equal(ema.shadow.weight, source.weight)
    before = ema.shadow.weight.clone()
    with torch.no_grad():
        source.weight.add_(1.0)
    ema.update(source)
    torch.testing.assert_close(ema.shadow.weight, 0.5 * before + 0.5 * source.weight)
    assert int(ema.num_updates) == 1 and not ema.shadow.weight.requires_grad

    warm = EMA(source, nn.Linear(3, 2), decay=0.9999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    warm.num_updates.fill_(990)
    assert warm.current_decay() == pytest.approx(991 / 1000)


def test_state_survives_a_round_trip() -> None:
    source = nn.Linear(3, 2)
    ema = EMA(source, nn.Linear(3, 2), decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            source.weight.mul_(1.1)
        ema.update(source)
    restored = EMA(nn.Linear(3, 2), nn.Linear(3, 2), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert int(restored.num_updates) == 3
    assert torch.equal(restored.shadow.weight, ema.shadow.weight)
