"""Tiny DiTs and conditionings for the LoRA tests (built in code, CPU, milliseconds)."""

from __future__ import annotations

import torch

from refrain.lora.control import ControlConditioning
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer

C, TEXT, VOCAB = 4, 8, 20


def tiny_dit(seed: int = 0, hidden: int = 32) -> DiffusionTransformer:
    torch.manual_seed(seed)
    model = DiffusionTransformer(
        DiTConfig(
            latent_channels=C,
            hidden_size=hidden,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            text_dim=TEXT,
            lyric_vocab_size=VOCAB,
            lyric_dim=16,
            lyric_conv_layers=1,
            repa_layer=1,
            zero_init_output=False,
        )
    )
    return model.eval()


def plain_cond(batch: int = 2, frames: int = 10, seed: int = 1) -> DiTConditioning:
    g = torch.Generator().manual_seed(seed)
    return DiTConditioning(
        style=torch.randn(batch, 3, TEXT, generator=g),
        style_mask=torch.ones(batch, 3, dtype=torch.bool),
        lyrics=torch.randint(0, VOCAB, (batch, frames), generator=g),
    )


def control_cond(batch: int = 2, frames: int = 10, seed: int = 1) -> ControlConditioning:
    g = torch.Generator().manual_seed(seed + 100)
    return ControlConditioning.from_plain(
        plain_cond(batch, frames, seed),
        reference=torch.randn(batch, C, frames, generator=g),
        instrument=torch.arange(batch) % 2,
    )


def inputs(batch: int = 2, frames: int = 10, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, C, frames, generator=g), torch.rand(batch, generator=g)


@torch.no_grad()
def perturb_trainable(model: torch.nn.Module, seed: int = 3, std: float = 0.2) -> None:
    """Stand-in for a few optimiser steps: move every trainable tensor off its initial value."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(std * torch.randn(p.shape, generator=g))


def fit_fixed_batch(
    task: torch.nn.Module, batch: object, steps: int = 25, lr: float = 3e-3
) -> tuple[list[float], set[str]]:
    """``steps`` AdamW steps of ``task.compute_loss`` on one batch with the same noise, sigma and dropout draws
    every step (a fixed objective): the losses, and the names of the parameters that received a gradient."""
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=lr)
    losses: list[float] = []
    with_grad: set[str] = set()
    for _ in range(steps):
        torch.manual_seed(0)
        loss = task.compute_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        with_grad |= {n for n, p in task.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
        losses.append(loss.item())
    return losses, with_grad
