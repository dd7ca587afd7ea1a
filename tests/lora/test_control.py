"""The zero-initialised reference path: exact base output at step 0, batching of its conditioning, CFG use."""

from __future__ import annotations

import pytest
import torch
from helpers.lora import control_cond, inputs, perturb_trainable, plain_cond, tiny_dit

from refrain.errors import RefrainInputError
from refrain.lora.config import parse_lora_spec
from refrain.lora.control import ControlConditioning, control_modules
from refrain.lora.inject import inject_lora, trainable_names
from refrain.sampling import CFG, sample_guided, sigma_schedule


@pytest.mark.parametrize("variant", ["stemgen", "singing2accompaniment"])
def test_zero_initialised_path_leaves_base_output_unchanged(variant: str) -> None:
    base = tiny_dit()
    x, sigma = inputs()
    cond = control_cond()
    if variant == "singing2accompaniment":
        cond.instrument.zero_()  # its only label: vocals
    expected = base(x, sigma, cond.plain()).velocity
    spec = parse_lora_spec(
        {"variant": variant, "r": 4, "lora_alpha": 4, "conditioning": {"control_width": 16}}
    )
    model = inject_lora(tiny_dit(), spec)
    assert any("reference_control" in n for n in trainable_names(model))
    assert torch.equal(model(x, sigma, cond).velocity, expected)  # bit-identical, reference given
    perturb_trainable(model)
    moved = model(x, sigma, cond).velocity
    assert not torch.allclose(moved, expected, atol=1e-4)
    # the reference itself now matters, and dropping it changes the output
    other = ControlConditioning.from_plain(
        cond.plain(), reference=torch.zeros_like(cond.reference), instrument=cond.instrument
    )
    assert not torch.allclose(model(x, sigma, other).velocity, moved, atol=1e-5)
    dropped = model(x, sigma, _dropped(cond)).velocity
    assert not torch.allclose(dropped, moved, atol=1e-5)


def _dropped(cond: ControlConditioning) -> ControlConditioning:
    from dataclasses import replace

    return replace(cond, drop_reference=torch.ones_like(cond.drop_reference))


def test_dropped_reference_and_no_label_is_the_lora_only_model() -> None:
    spec = parse_lora_spec(
        {"variant": "stemgen", "r": 4, "lora_alpha": 4, "conditioning": {"control_width": 16}}
    )
    model = inject_lora(tiny_dit(), spec)
    perturb_trainable(model)
    x, sigma = inputs()
    cond = control_cond()
    assert torch.equal(model(x, sigma, _dropped(cond)).velocity, model(x, sigma, cond.plain()).velocity)


def test_conditioning_batches_like_the_plain_one() -> None:
    cond = control_cond(batch=2)
    tiled = cond.repeat(3)
    assert isinstance(tiled, ControlConditioning) and tiled.batch_size == 6
    assert torch.equal(tiled.reference[2:4], cond.reference) and torch.equal(
        tiled.instrument[4:], cond.instrument
    )
    joined = ControlConditioning.cat([cond, plain_cond(batch=1), cond.with_dropped(style=True)])
    assert isinstance(joined, ControlConditioning) and joined.batch_size == 5
    assert joined.instrument.tolist() == [0, 1, -1, 0, 1]
    assert joined.drop_reference.tolist() == [False, False, True, False, False]
    assert torch.equal(joined.reference[2], torch.zeros_like(joined.reference[2]))
    assert joined.reference_mask[2].sum() == 0 and joined.drop_style.tolist() == [False] * 3 + [True] * 2
    moved = cond.to("cpu", torch.float64)
    assert moved.reference.dtype == torch.float64 and moved.instrument.dtype == torch.long
    with pytest.raises(RefrainInputError, match="ControlConditioning.reference"):
        ControlConditioning.from_plain(cond.plain(), reference=torch.zeros(2, 4, 7)).validate()


def test_guided_sampling_keeps_the_reference_in_every_pass() -> None:
    spec = parse_lora_spec(
        {"variant": "stemgen", "r": 4, "lora_alpha": 4, "conditioning": {"control_width": 16}}
    )
    model = inject_lora(tiny_dit(), spec)
    perturb_trainable(model)
    cond = control_cond()
    noise = torch.randn(2, 4, 10, generator=torch.Generator().manual_seed(0))
    run = lambda c: sample_guided(model, c, noise, sigma_schedule(4), guidance=CFG(), scale=3.0)  # noqa: E731
    with_ref = run(cond)
    assert with_ref.shape == noise.shape and torch.isfinite(with_ref).all()
    assert not torch.allclose(with_ref, run(_dropped(cond)), atol=1e-5)


def test_label_outside_vocabulary() -> None:
    spec = parse_lora_spec({"variant": "singing2accompaniment", "r": 4, "lora_alpha": 4})
    model = inject_lora(tiny_dit(), spec)
    x, sigma = inputs()
    cond = control_cond()
    cond.instrument[:] = torch.tensor([0, 3])
    with pytest.raises(RefrainInputError, match="outside the 1 trained labels"):
        model(x, sigma, cond)
    assert len(control_modules(model)) == 2  # PEFT keeps the zero original and the trained copy
