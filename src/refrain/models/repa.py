"""REPA projectors: map a DiT hidden state into each teacher's feature space.

One 3-layer MLP (Linear, SiLU, Linear, SiLU, Linear) per teacher, as in the REPA paper and ACE-Step v1.
They are trained with the DiT and dropped at export (the sampler never needs them).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn


class REPAProjector(nn.Sequential):
    """(..., hidden_size) -> (..., teacher_dim)."""

    def __init__(self, hidden_size: int, teacher_dim: int, projector_dim: int = 2048) -> None:
        super().__init__(
            nn.Linear(hidden_size, projector_dim),
            nn.SiLU(),
            nn.Linear(projector_dim, projector_dim),
            nn.SiLU(),
            nn.Linear(projector_dim, teacher_dim),
        )
        self.hidden_size = hidden_size
        self.teacher_dim = teacher_dim


class REPAProjectors(nn.ModuleDict):
    """One projector per teacher name; ``teacher_dims`` maps name -> teacher feature size."""

    def __init__(self, hidden_size: int, teacher_dims: Mapping[str, int], projector_dim: int = 2048) -> None:
        super().__init__(
            {name: REPAProjector(hidden_size, int(dim), projector_dim) for name, dim in teacher_dims.items()}
        )
