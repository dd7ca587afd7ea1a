"""Learning-rate schedule shared by the training tasks: linear warm-up, then cosine or linear decay.

A multiplier of the optimiser's base learning rate (``lr: ${learning_rate}``) as a ``LambdaLR``, stepped
once per optimiser step, so the schedule is a pure function of the step and resumes exactly from a
checkpoint. The total length defaults to the Trainer's estimate of optimiser steps (``max_steps`` or
epochs x batches / ``accumulate_grad_batches``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from refrain.errors import RefrainInputError

DECAYS = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class WarmupDecay:
    """``factor(step)``: 0 -> 1 linearly over ``warmup_steps``, then 1 -> ``min_lr_ratio`` over the rest."""

    warmup_steps: int = 1000
    total_steps: int | None = None
    decay: str = "cosine"
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise RefrainInputError(
                "task.lr_schedule.decay", f"unknown decay {self.decay!r}", f"use one of {', '.join(DECAYS)}"
            )
        if self.warmup_steps < 0:
            raise RefrainInputError(
                "task.lr_schedule.warmup_steps", f"{self.warmup_steps} is negative", "use 0 or more steps"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise RefrainInputError(
                "task.lr_schedule.min_lr_ratio", f"{self.min_lr_ratio} is outside [0, 1]", "use e.g. 0.1"
            )

    def factor(self, step: int, total_steps: int | None = None) -> float:
        total = total_steps if total_steps is not None else self.total_steps
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant" or total is None or total <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1.0 - progress
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape

    def build(
        self, optimizer: torch.optim.Optimizer, total_steps: int | None
    ) -> torch.optim.lr_scheduler.LambdaLR:
        """A LambdaLR over ``optimizer``; ``total_steps`` fills in when the config left it null."""
        total = self.total_steps if self.total_steps is not None else total_steps
        if total is not None and (math.isinf(total) or total <= 0):
            total = None
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.factor(step, total))
