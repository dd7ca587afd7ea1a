"""Host-side batch flags: what lets a GPU training step drop the attention mask and skip encoders for
dropped rows without a device->host read. Checked on CPU through the same code path a GPU step takes
(the hints are used whenever present; ``skip_dropped=False`` is the accelerator's setting)."""

from __future__ import annotations

import copy
from dataclasses import fields, is_dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers.lora import TEXT, VOCAB, C, plain_cond, tiny_dit

from refrain.data.collate import collate_dit
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.losses.repa import REPALoss
from refrain.models.dit.conditioning import PreparedConditioning
from refrain.models.dit.transformer import DiffusionTransformer
from refrain.models.teachers import TeacherSpec
from refrain.sampling.guidance import APG
from refrain.sampling.guided import sample_guided
from refrain.tasks.dit_task import DiTTask

FRAMES = 12


def _item(frames: int, tokens: int, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {
        "latent_mean": torch.randn(C, frames, generator=g),
        "latent_std": torch.full((C, frames), 0.1),
        "lyrics": torch.randint(1, VOCAB, (frames,), generator=g),
        "style": torch.randn(tokens, TEXT, generator=g),
        "teacher_features": {},
        "key": f"song{seed}",
        "prompt": "p",
        "lyrics_text": "l",
        "crop_start": 0.0,
    }


def test_collate_computes_the_host_flags_on_the_cpu() -> None:
    full = collate_dit([_item(FRAMES, 3, 0), _item(FRAMES, 2, 1)])
    assert full["all_frames_valid"] is True and full["style_absent"] == (False, False)
    padded = collate_dit([_item(FRAMES, 3, 0), None, _item(FRAMES - 4, 0, 1)])
    assert padded["all_frames_valid"] is False and padded["style_absent"] == (False, True)
    assert bool(full["frame_mask"].all()) and not bool(padded["frame_mask"].all())
    assert collate_dit([None])["all_frames_valid"] is True  # an empty batch has nothing padded


def test_the_conditioning_keeps_its_hints_on_the_host() -> None:
    model = tiny_dit()
    cond = model.conditioning_from_batch(collate_dit([_item(FRAMES, 3, 0), _item(FRAMES - 4, 0, 1)]))
    assert cond.all_frames_valid is False and cond.host_dropped_style == (False, True)
    moved = cond.to("cpu", torch.float64).repeat(2)
    assert moved.all_frames_valid is False and moved.host_dropped_style == (False, True, False, True)
    uncond = cond.with_dropped(style=True, lyrics=False)
    assert uncond.host_dropped_style == (True, True) and uncond.host_dropped_lyrics == (False, False)
    assert type(cond).cat([cond, uncond]).host_dropped_style == (False, True, True, True)


class _MaskSpy:
    """Records whether each self-attention call (keys = latent frames) received a mask."""

    def __init__(self) -> None:
        self.masks: list[bool] = []
        self.original = F.scaled_dot_product_attention

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if k.shape[-2] == FRAMES:
            self.masks.append(kwargs.get("attn_mask") is not None)
        return self.original(q, k, v, **kwargs)


def _loss(task: DiTTask, batch: dict[str, Any]) -> torch.Tensor:
    torch.manual_seed(3)  # the posterior sample, CFG dropout, span and sigma draws
    task.model.zero_grad(set_to_none=True)
    loss = task.compute_loss(batch)["loss"]
    loss.backward()
    return loss.detach()


def test_all_frames_valid_drops_the_mask_with_the_masked_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_dit().train()
    task = DiTTask(model, loss=FlowMatchingLoss(masked_span_prob=0.0), optimizer=partial(torch.optim.AdamW))
    spy = _MaskSpy()
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    batch = collate_dit([_item(FRAMES, 3, 0), _item(FRAMES, 2, 1)])
    unmasked = _loss(task, batch)
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert spy.masks and not any(spy.masks)  # the flag dropped the mask in every block
    spy.masks.clear()
    masked = _loss(task, {**batch, "all_frames_valid": False})  # the flag unknown: the mask stays
    assert spy.masks and all(spy.masks)
    torch.testing.assert_close(unmasked, masked, rtol=0, atol=1e-6)
    masked_grads = [p.grad for p in model.parameters() if p.grad is not None]
    for got, want in zip(grads, masked_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_style_absent_rows_skip_the_style_encoders_without_reading_flags() -> None:
    model = tiny_dit().train()
    rows: list[int] = []
    model.conditioner.style_proj.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    batch = collate_dit([_item(FRAMES, 3, 0), _item(FRAMES, 0, 1), _item(FRAMES, 2, 2)])
    cond = model.conditioning_from_batch(batch)
    hinted = model.conditioner(cond, skip_dropped=False)  # a GPU step: hints only, no flag read
    assert rows == [2]  # the prompt-less row never reached the encoder
    read = model.conditioner(cond, skip_dropped=True)
    for got, want in ((hinted.style, read.style), (hinted.vector, read.vector), (hinted.frame, read.frame)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert torch.equal(hinted.style_mask, read.style_mask)


def _on_meta(value: Any) -> Any:
    """``value`` with every tensor in it moved to the meta device: a tensor, a dict (a collated batch and
    its teacher dicts) or a dataclass (a conditioning); flags, strings and None kept."""
    if isinstance(value, torch.Tensor):
        return value.to("meta")
    if isinstance(value, dict):
        return {key: _on_meta(item) for key, item in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return type(value)(**{f.name: _on_meta(getattr(value, f.name)) for f in fields(value)})
    return value


@pytest.mark.parametrize("patch_size", [1, 2])
def test_a_training_step_off_the_cpu_reads_nothing_back_from_the_device(
    tmp_path: Path, patch_size: int
) -> None:
    """The meta device holds no data, so every device->host read (``.item()``, ``bool(t)``, ``int(t)``,
    a boolean index, ``nonzero``) raises there. A whole DiTTask step on it (a padded row and a prompt-less
    one, CFG drops, masked spans, REPA) is a GPU step's code path with no synchronisation in it."""
    model = DiffusionTransformer(replace(tiny_dit().config, patch_size=patch_size)).train()
    teacher = TeacherSpec(name="mert", checkpoint_dir=str(tmp_path), sample_rate=16000, feature_dim=6)
    loss = FlowMatchingLoss(drop_style_prob=0.5, drop_lyrics_prob=0.5, masked_span_prob=1.0)
    task = DiTTask(
        model,
        loss=loss,
        optimizer=partial(torch.optim.AdamW),
        repa=partial(REPALoss, teachers={"mert": teacher}, projector_dim=16, weight=1.0),
    )
    items = [_item(FRAMES, 3, 0), _item(FRAMES - 3, 2, 1), _item(FRAMES, 0, 2)]
    for seed, item in enumerate(items):
        item["teacher_features"] = {"mert": torch.randn(7, 6, generator=torch.Generator().manual_seed(seed))}
    batch = collate_dit(items)
    assert batch["all_frames_valid"] is False  # the padded row keeps the attention mask in the step
    for probe in (
        lambda: bool(batch["frame_mask"].to("meta").all()),
        lambda: batch["lyrics"].to("meta")[0].tolist(),
    ):
        with pytest.raises((RuntimeError, NotImplementedError)):
            probe()  # the detector: a host read of a meta tensor fails
    task.to("meta")
    on_meta = _on_meta(batch)
    for seed in range(3):  # different CFG drop and span draws (drawn on the host)
        torch.manual_seed(seed)
        terms = task.compute_loss(on_meta)
        assert set(terms) >= {"flow", "repa", "loss"} and terms["loss"].device.type == "meta"
        terms["loss"].backward()
    grads = [p.grad for p in task.model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.device.type == "meta" for g in grads)


class _PreparedOnHostModel:
    """The DiT as a GPU sampling run sees it: ``prepare`` reads the host once per run (validation, the
    lyric id range, the all-frames-valid flag), then every step runs on the device (here: meta)."""

    def __init__(self, model: DiffusionTransformer) -> None:
        self.host, self.device_model = model, copy.deepcopy(model).to("meta")

    def prepare(self, cond: Any) -> PreparedConditioning:
        prepared = self.host.prepare(cond)
        return PreparedConditioning(
            _on_meta(prepared.cond), _on_meta(prepared.embedded), prepared.all_frames_valid
        )

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: PreparedConditioning) -> Any:
        return self.device_model(x, sigma, cond)


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("lyrics_scale", [None, 2.0])
def test_sampling_steps_off_the_cpu_read_nothing_back_from_the_device(
    solver: str, lyrics_scale: float | None
) -> None:
    """Every step of a guided sampling run (the DiT on the stacked guidance batch, APG with its momentum,
    the solver's update) on the meta device: no step reads the device back; only ``prepare`` reads the
    host, once per run, by design."""
    model = _PreparedOnHostModel(tiny_dit())
    latent = sample_guided(
        model,
        plain_cond(batch=2, frames=10),
        torch.randn(2, C, 10, device="meta"),
        torch.linspace(1.0, 0.0, 7),
        solver,
        guidance=APG(),
        scale=15.0,
        lyrics_scale=lyrics_scale,
        interval=0.5,
    )
    assert latent.device.type == "meta" and latent.shape == (2, C, 10)


def test_a_padded_songs_forward_off_the_cpu_reads_nothing_back_from_the_device() -> None:
    """With a padded row the step keeps the attention mask and zeroes the padding's velocity: still no read."""
    cond = plain_cond(batch=2, frames=10)
    cond = replace(cond, frame_mask=torch.arange(10)[None] < torch.tensor([10, 7])[:, None])
    model = _PreparedOnHostModel(tiny_dit())
    prepared = model.prepare(cond)
    assert prepared.all_frames_valid is False
    with torch.no_grad():
        out = model(torch.randn(2, C, 10, device="meta"), torch.full((2,), 0.5, device="meta"), prepared)
    assert out.velocity.device.type == "meta" and out.velocity.shape == (2, C, 10)
