"""Exponential moving average of a model's weights, kept as a second module of the same architecture.

``torch.optim.swa_utils.AveragedModel`` deep-copies its source, which fails for modules that use
``torch.nn.utils.weight_norm`` (all of Oobleck), so the caller hands in a freshly built twin instead.
The twin and the update count are ordinary parameters/buffers: they travel in every checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA(nn.Module):
    """``shadow <- decay * shadow + (1 - decay) * source`` after every optimiser step.

    With ``warmup`` the decay used is ``min(decay, (1 + n) / (10 + n))`` after n updates, so short runs
    (demos, tests) do not export weights that are still mostly the initialisation.
    """

    def __init__(
        self, source: nn.Module, shadow: nn.Module, decay: float = 0.9999, warmup: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.shadow = shadow
        self.shadow.load_state_dict(source.state_dict())
        self.shadow.requires_grad_(False)
        self.shadow.eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        decay = self.current_decay()
        shadow_params = list(self.shadow.parameters())
        source_params = [
            p.detach().to(s.dtype) for p, s in zip(source.parameters(), shadow_params, strict=True)
        ]
        torch._foreach_lerp_(shadow_params, source_params, 1.0 - decay)
        for shadow_buffer, source_buffer in zip(self.shadow.buffers(), source.buffers(), strict=True):
            shadow_buffer.copy_(source_buffer)
        self.num_updates += 1

    def train(self, mode: bool = True) -> EMA:
        """The shadow always stays in eval mode; it is never trained directly."""
        super().train(mode)
        self.shadow.eval()
        return self
