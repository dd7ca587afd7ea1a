"""REPA projector structure."""

from __future__ import annotations

import torch
from torch import nn

from refrain.models.repa import REPAProjector, REPAProjectors


def test_projector_is_three_linear_layers_with_silu() -> None:
    proj = REPAProjector(24, 10, projector_dim=48)
    kinds = [type(m) for m in proj]
    assert kinds == [nn.Linear, nn.SiLU, nn.Linear, nn.SiLU, nn.Linear]
    assert proj(torch.randn(2, 7, 24)).shape == (2, 7, 10)


def test_one_projector_per_teacher() -> None:
    heads = REPAProjectors(24, {"mert": 1024, "mhubert": 768}, projector_dim=64)
    assert sorted(heads) == ["mert", "mhubert"]
    assert heads["mert"][-1].out_features == 1024 and heads["mhubert"][-1].out_features == 768
    assert heads["mert"][0].in_features == 24
