"""GPU-only paths of the DiT: unmasked self-attention when every frame is valid, no host sync per step.

The CPU tests check what decides them; the gpu-marked ones (run by bench/bench_gpu.py, which runs
``pytest -m gpu``) check them on CUDA.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers.lora import VOCAB, tiny_dit

from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.dit import blocks
from refrain.models.dit.conditioning import DiTConditioning


def batch(
    frames: int = 12, padded: bool = False, device: str = "cpu"
) -> tuple[torch.Tensor, DiTConditioning]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(2, frames, dtype=torch.bool)
    if padded:
        mask[1, frames // 2 :] = False
    cond = DiTConditioning(
        style=torch.randn(2, 3, 8, generator=g),
        style_mask=torch.ones(2, 3, dtype=torch.bool),
        lyrics=torch.randint(1, VOCAB, (2, frames), generator=g),
        frame_mask=mask,
    )
    return torch.randn(2, 4, frames, generator=g).to(device), cond.to(device)


def self_attention_masks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The attn_mask of every self-attention call (the calls whose keys are the frames)."""
    seen: list[Any] = []
    original = F.scaled_dot_product_attention

    def spy(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Any = None, **kw: Any
    ) -> torch.Tensor:
        if q.shape[-2] == k.shape[-2]:
            seen.append(attn_mask)
        return original(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(blocks.F, "scaled_dot_product_attention", spy)
    return seen


def test_all_valid_frames_attend_without_a_mask_and_padding_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_dit()
    seen = self_attention_masks(monkeypatch)
    with torch.no_grad():
        x, cond = batch()
        model(x, torch.full((2,), 0.5), cond)
        model(x, torch.full((2,), 0.5), model.prepare(cond))
        assert seen and all(mask is None for mask in seen)
        seen.clear()
        x, cond = batch(padded=True)
        model(x, torch.full((2,), 0.5), model.prepare(cond))
        assert seen and all(mask is not None for mask in seen)


def test_bad_phoneme_ids_are_one_line_in_prepare() -> None:
    from refrain.errors import RefrainInputError

    model = tiny_dit()
    _, cond = batch()
    cond.lyrics[0, 0] = VOCAB + 5
    with pytest.raises(RefrainInputError, match="lyric_vocab_size"):
        model.prepare(cond)


@pytest.mark.gpu
def test_gpu_training_step_and_sampling_call_do_not_synchronise() -> None:
    model = tiny_dit().cuda().train()
    x, cond = batch(frames=64, device="cuda")
    prepared = model.prepare(cond)  # once per run: may read the device
    loss_fn = FlowMatchingLoss(masked_span_prob=0.5)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss_fn(model, x, cond).loss.backward()
        with torch.no_grad():
            model(x, torch.full((2,), 0.5, device="cuda"), prepared)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_gpu_sampling_with_all_frames_valid_runs_self_attention_unmasked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_dit().cuda()
    seen = self_attention_masks(monkeypatch)
    x, cond = batch(frames=64, device="cuda")
    with torch.no_grad():
        model(x, torch.full((2,), 0.5, device="cuda"), model.prepare(cond))
    assert seen and all(mask is None for mask in seen)
