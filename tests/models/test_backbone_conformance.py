"""Every backbone meets refrain's contract (refrain.models.backbone): one suite, parametrised over backbones.

Adding a backbone = its wrapper file, its config file, and one ``Case`` in ``CASES`` below: a builder of a
tiny instance and a builder of a DiT batch in the format its ``conditioning_from_batch`` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.ace15 import write_tiny_release
from helpers.diffrhythm import diffrhythm_batch, tiny_diffrhythm
from helpers.stable_audio import cached_release, sao_batch
from hydra.utils import get_class
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.backbone import (
    Backbone,
    BackboneSpec,
    backbone_of,
    check_loss,
    fsdp_unit_classes,
    require,
    seeded_noise,
    spec_of,
)
from refrain.models.backbones.stable_audio import load_stable_audio
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer
from refrain.models.dit.velocity import VelocityOutput
from refrain.sampling.options import SamplerOptions


class ToyBackbone(nn.Module):
    """The smallest backbone that meets the contract: a per-frame MLP of (x, sigma, pooled style, lyric id).

    It has no context input and drops style and lyrics separately: the suite must accept that and the
    contract must refuse context for it with one line.
    """

    def __init__(self, channels: int = 4, hidden: int = 16, text_dim: int = 6, vocab: int = 20) -> None:
        super().__init__()
        self.inp = nn.Linear(channels + 1 + text_dim, hidden)
        self.lyric = nn.Embedding(vocab, hidden)
        self.block = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden))
        self.out = nn.Linear(hidden, channels)
        self.channels, self.hidden = channels, hidden
        self.checkpointing = False

    @property
    def latent_channels(self) -> int:
        return self.channels

    @property
    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(
            name="toy",
            latent_channels=self.channels,
            hidden_size=self.hidden,
            repa_layer=1,
            conditioning_type=DiTConditioning,
            supports_context=False,
            cfg_drops=frozenset({"style", "lyrics", "all"}),
            fsdp_wrap=("torch.nn.Sequential",),
            sampler_defaults={"steps": 4, "guidance": "cfg", "guidance_scale": 2.0},
            loss_preset={"masked_span_prob": 0.0},
        )

    def conditioning_from_batch(self, batch: Mapping[str, Any]) -> DiTConditioning:
        return DiTConditioning(
            batch["style"],
            batch["style_mask"].bool(),
            batch["lyrics"].long(),
            frame_mask=batch["frame_mask"].bool(),
        )

    def noise(self, seed: int, frames: int) -> Tensor:
        return seeded_noise(seed, self.channels, frames)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.checkpointing = enabled

    def forward(
        self, x: Tensor, sigma: Tensor, cond: DiTConditioning, return_hidden: bool = False
    ) -> VelocityOutput:
        cond.validate(x)
        if cond.context_present().any():
            require(self, "context", "toy input", "do not pass a context latent")
        weights = cond.style_mask[..., None].float()
        pooled = (cond.style * weights).sum(1) / weights.sum(1).clamp_min(1)
        pooled = torch.where(cond.drop_style[:, None], torch.zeros_like(pooled), pooled)
        b, _, t = x.shape
        s = sigma.reshape(-1).expand(b)[:, None, None].expand(b, t, 1)
        h = self.inp(torch.cat([x.transpose(1, 2), s.to(x.dtype), pooled[:, None].expand(b, t, -1)], dim=-1))
        h = h + torch.where(cond.drop_lyrics[:, None, None], 0.0, self.lyric(cond.lyrics))
        hidden = self.block(h)
        v = self.out(hidden).transpose(1, 2) * cond.frame_mask[:, None].to(x.dtype)
        return VelocityOutput(v, hidden if return_hidden else None)


def dit_batch(size: int, frames: int, channels: int, text_dim: int, vocab: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    return {
        "latent_mean": torch.randn(size, channels, frames, generator=g),
        "latent_std": torch.full((size, channels, frames), 0.1),
        "frame_mask": torch.ones(size, frames, dtype=torch.bool),
        "style": torch.randn(size, 5, text_dim, generator=g),
        "style_mask": torch.ones(size, 5, dtype=torch.bool),
        "lyrics": torch.randint(1, vocab, (size, frames), generator=g),
        "prompts": ["calm piano", "fast drums"][:size],
        "lyrics_text": ["[verse]\nla la", "[chorus]\nhey"][:size],
    }


@dataclass
class Case:
    build: Callable[[Path], nn.Module]
    batch: Callable[[int, int], dict[str, Any]]


def _dit(_: Path) -> nn.Module:
    torch.manual_seed(0)
    model = DiffusionTransformer(
        DiTConfig(
            latent_channels=4,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            text_dim=6,
            lyric_vocab_size=20,
            lyric_dim=16,
            lyric_conv_layers=1,
            repa_layer=1,
        )
    )
    with torch.no_grad():  # adaLN-zero starts as the identity: give every weight a value so drops show
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return model


def _ace15(folder: Path) -> nn.Module:
    from refrain.models.backbones.ace15 import load_ace15

    return load_ace15(folder, repa_layer=2)


def _toy(_: Path) -> nn.Module:
    torch.manual_seed(0)
    return ToyBackbone()


CASES = {
    "refrain_dit": Case(_dit, lambda b, t: dit_batch(b, t, 4, 6, 20)),
    "ace15": Case(_ace15, lambda b, t: dit_batch(b, t, 8, 6, 20)),
    "toy": Case(_toy, lambda b, t: dit_batch(b, t, 4, 6, 20)),
    "diffrhythm": Case(lambda _: tiny_diffrhythm(), lambda b, t: diffrhythm_batch(b, t)),
    "stable_audio_open": Case(lambda f: load_stable_audio(cached_release(f.parent), repa_layer=2), sao_batch),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_release(tmp_path_factory.mktemp("conformance") / "ace15")


@pytest.fixture(params=sorted(CASES))
def case(
    request: pytest.FixtureRequest, release: Path
) -> tuple[nn.Module, Callable[[int, int], dict[str, Any]]]:
    chosen = CASES[request.param]
    return chosen.build(release).eval(), chosen.batch


def test_spec_describes_the_model(case) -> None:
    model, _ = case
    spec = spec_of(model)
    assert isinstance(model, Backbone) and backbone_of(model) is model
    assert spec.latent_channels == model.latent_channels and spec.hidden_size > 0
    for name in ("cat", "repeat", "to", "validate", "with_dropped"):
        assert callable(getattr(spec.conditioning_type, name))
    units = tuple(fsdp_unit_classes(model))
    assert set(units) == {get_class(path) for path in spec.fsdp_wrap}
    assert any(isinstance(m, units) for m in model.modules())  # FSDP has something to wrap
    SamplerOptions(**spec.sampler_defaults)  # the defaults are valid sampler options
    check_loss(model, FlowMatchingLoss(**spec.loss_preset))  # the preset only uses drops it has


def test_forward_shapes_hidden_state_and_padding(case) -> None:
    model, make = case
    batch = make(2, 10)
    batch["frame_mask"][1, 7:] = False
    cond = model.conditioning_from_batch(batch)
    assert isinstance(cond, spec_of(model).conditioning_type)
    with torch.no_grad():
        out = model(batch["latent_mean"], torch.tensor([0.2, 0.7]), cond, return_hidden=True)
    c = model.latent_channels
    assert out.velocity.shape == (2, c, 10) and torch.isfinite(out.velocity).all()
    assert out.hidden is not None and out.hidden.shape == (2, 10, spec_of(model).hidden_size)
    assert out.velocity[1, :, 7:].abs().max() == 0  # padded frames carry no velocity (and no loss)


def test_conditioning_batch_operations(case) -> None:
    model, make = case
    cond = model.conditioning_from_batch(make(2, 8))
    kind = spec_of(model).conditioning_type
    twice = kind.cat([cond, cond])
    assert twice.batch_size == 4 and cond.repeat(2).batch_size == 4
    x = make(2, 8)["latent_mean"]
    sigma = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        one = model(x, sigma, cond).velocity
        both = model(torch.cat([x, x]), sigma.repeat(2), cond.repeat(2)).velocity
    torch.testing.assert_close(both[:2], one, rtol=0, atol=1e-5)  # CFG stacks passes: same numbers
    moved = cond.to("cpu", torch.float64)
    assert moved.frame_mask.dtype == torch.bool
    with pytest.raises(RefrainInputError):
        cond.validate(torch.zeros(3, model.latent_channels, 8))


def test_whole_condition_drop_changes_the_velocity(case) -> None:
    model, make = case
    batch = make(1, 8)
    cond = model.conditioning_from_batch(batch)
    x, sigma = batch["latent_mean"], torch.tensor([0.6])
    with torch.no_grad():
        kept = model(x, sigma, cond).velocity
        dropped = model(x, sigma, cond.with_dropped(style=True, lyrics=True)).velocity
    assert (kept - dropped).abs().max() > 1e-4


def test_context_is_used_or_refused_in_one_line(case) -> None:
    model, make = case
    batch = make(1, 8)
    x, sigma = batch["latent_mean"], torch.tensor([0.6])
    cond = model.conditioning_from_batch(batch)
    given = torch.zeros(1, 1, 8)
    given[..., :4] = 1
    from dataclasses import replace

    with_context = replace(cond, context=torch.randn(1, model.latent_channels, 8), context_mask=given)
    if spec_of(model).supports_context:
        with torch.no_grad():
            assert (
                model(x, sigma, with_context).velocity - model(x, sigma, cond).velocity
            ).abs().max() > 1e-4
    else:
        with pytest.raises(RefrainInputError) as error:
            model(x, sigma, with_context)
        assert "\n" not in str(error.value) and "context" in str(error.value)
        with pytest.raises(RefrainInputError, match="masked_span_prob"):
            check_loss(model, FlowMatchingLoss(**{**spec_of(model).loss_preset, "masked_span_prob": 0.3}))


def test_noise_for_a_seed_is_deterministic(case) -> None:
    model, _ = case
    a, b = model.noise(5, 12), model.noise(5, 12)
    assert a.shape == (1, model.latent_channels, 12) and torch.equal(a, b)
    assert not torch.equal(a, model.noise(6, 12))


def test_training_step_and_gradient_checkpointing(case) -> None:
    model, make = case
    model.train()
    batch = make(2, 8)
    loss_fn = FlowMatchingLoss(**spec_of(model).loss_preset)
    results = []
    for enabled in (False, True):
        model.enable_gradient_checkpointing(enabled)
        model.zero_grad()
        torch.manual_seed(0)
        out = loss_fn(model, batch["latent_mean"], model.conditioning_from_batch(batch), return_hidden=True)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((out.loss.detach(), grads))
    model.enable_gradient_checkpointing(False)
    assert torch.isfinite(results[0][0]) and results[0][1]
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-6)
    for g0, g1 in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(g0, g1, rtol=0, atol=1e-5)


def test_a_reference_track_is_the_backbones_own_input_or_a_control_path_or_refused(case) -> None:
    """StemGen: a backbone with ``native_reference`` reads the whole reference track itself (no control path);
    any other gets refrain's zero-initialised control path or a one-line refusal."""
    from dataclasses import replace

    from refrain.lora.config import parse_lora_spec
    from refrain.lora.control import CONTROL_MODULE
    from refrain.lora.inject import inject_lora

    model, make = case
    spec = parse_lora_spec({"variant": "stemgen", "r": 2, "target_modules": ["to_q"]}, "stemgen.json")
    if not spec_of(model).native_reference:
        try:
            inject_lora(model, spec)
        except RefrainInputError as error:
            assert "\n" not in str(error)
            return
        assert any(CONTROL_MODULE in name for name, _ in model.named_modules())
        return
    batch = make(1, 8)
    x, sigma = batch["latent_mean"], torch.tensor([0.6])
    cond = model.conditioning_from_batch(batch)
    with_reference = replace(cond, reference=torch.randn(1, model.latent_channels, 8))
    with torch.no_grad():
        assert (model(x, sigma, with_reference).velocity - model(x, sigma, cond).velocity).abs().max() > 1e-4
    peft = inject_lora(model, spec)
    assert not any(CONTROL_MODULE in name for name, _ in peft.named_modules())
