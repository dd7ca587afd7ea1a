"""The LLaMA-style DiT: shapes, padding isolation, adaLN-zero identity, checkpointing, presets."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from refrain.errors import RefrainInputError
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer
from refrain.models.dit.velocity import VelocityModel, VelocityOutput


def preset(name: str):
    """A conf/model/dit preset as trainer.py composes it (its latent size resolves from the VAE bundle)."""
    from refrain.config import compose_config

    return compose_config([f"model/dit={name}"]).model.dit


C, TEXT, SPK = 8, 16, 6


def tiny(**kw: object) -> DiffusionTransformer:
    torch.manual_seed(0)
    args = dict(
        latent_channels=C,
        hidden_size=32,
        num_layers=3,
        num_heads=4,
        intermediate_size=64,
        text_dim=TEXT,
        lyric_vocab_size=40,
        lyric_dim=16,
        lyric_conv_layers=2,
        speaker_dim=SPK,
        repa_layer=2,
    )
    args.update(kw)
    checkpointing = bool(args.pop("gradient_checkpointing", False))
    return DiffusionTransformer(DiTConfig(**args), gradient_checkpointing=checkpointing)


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter (gates and zero-initialised heads too) non-zero values."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def batch(b: int = 2, t: int = 12, valid: tuple[int, ...] = (12, 8)) -> tuple[torch.Tensor, DiTConditioning]:
    g = torch.Generator().manual_seed(7)
    frame_mask = torch.arange(t)[None] < torch.tensor(valid)[:, None]
    cond = DiTConditioning(
        style=torch.randn(b, 5, TEXT, generator=g),
        style_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]),
        lyrics=torch.randint(0, 40, (b, t), generator=g),
        speaker=torch.randn(b, SPK, generator=g),
        context=torch.randn(b, C, t, generator=g),
        context_mask=(torch.rand(b, 1, t, generator=g) > 0.5).float(),
        frame_mask=frame_mask,
    )
    return torch.randn(b, C, t, generator=g), cond


def test_shapes_hidden_and_interface() -> None:
    model = tiny()
    x, cond = batch()
    out = model(x, torch.tensor([0.3, 0.9]), cond, return_hidden=True)
    assert isinstance(model, VelocityModel) and isinstance(out, VelocityOutput)
    assert model.latent_channels == C
    assert out.velocity.shape == (2, C, 12) and out.hidden.shape == (2, 12, 32)
    assert model(x, torch.tensor(0.5), cond).hidden is None  # scalar sigma broadcasts


def test_padding_never_reaches_valid_frames() -> None:
    model = randomize(tiny()).eval()
    x, cond = batch()
    sigma = torch.tensor([0.4, 0.7])
    ref = model(x, sigma, cond, return_hidden=True)
    x2, cond2 = x.clone(), DiTConditioning(**{k: getattr(cond, k) for k in cond.__dataclass_fields__})
    x2[1, :, 8:] = 100.0
    cond2.lyrics = cond.lyrics.clone()
    cond2.lyrics[1, 8:] = 39
    cond2.context = cond.context.clone()
    cond2.context[1, :, 8:] = -50.0
    out = model(x2, sigma, cond2, return_hidden=True)
    assert torch.allclose(out.velocity[1, :, :8], ref.velocity[1, :, :8], atol=1e-5)
    assert torch.allclose(out.hidden[1, :8], ref.hidden[1, :8], atol=1e-5)
    assert torch.equal(out.velocity[1, :, 8:], torch.zeros(C, 4))  # padded velocity is zeroed
    assert torch.allclose(out.velocity[0], ref.velocity[0], atol=1e-6)
    # and the model does see valid frames: changing one moves the output
    x2[1, :, 3] += 1.0
    assert not torch.allclose(model(x2, sigma, cond2).velocity[1, :, :8], ref.velocity[1, :, :8], atol=1e-4)


@pytest.mark.parametrize("shared_adaln", [True, False])
def test_fresh_blocks_are_identity(shared_adaln: bool) -> None:
    """adaLN-zero: gates, modulation and cross-attention output start at zero, so every block returns its
    input exactly; the velocity is then the final layer applied to the embedded input. With the default
    zero-initialised head that velocity is exactly zero."""
    model = tiny(zero_init_output=False, shared_adaln=shared_adaln)
    torch.nn.init.normal_(model.final_layer.adaLN_modulation[1].weight)
    x, cond = batch()
    sigma = torch.tensor([0.2, 0.8])
    h0, c, _, _ = model.embed(x, sigma, cond)
    for layer in range(4):
        model.repa_layer = layer
        assert torch.equal(model(x, sigma, cond, return_hidden=True).hidden, h0)
    expected = model.final_layer(h0, c).transpose(1, 2) * cond.frame_mask[:, None]
    got = model(x, sigma, cond).velocity
    assert torch.allclose(got, expected, atol=1e-6) and got.abs().amax() > 0
    assert torch.equal(tiny()(x, sigma, cond).velocity, torch.zeros_like(x))


def test_gradient_checkpointing_matches() -> None:
    x, cond = batch()
    sigma = torch.tensor([0.5, 0.5])
    grads = []
    for ckpt in (False, True):
        model = randomize(tiny(gradient_checkpointing=ckpt))
        model(x, sigma, cond).velocity.square().sum().backward()
        grads.append(model.blocks[0].attn.to_q.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_bad_config_and_input_are_errors() -> None:
    with pytest.raises(RefrainInputError, match="repa_layer"):
        tiny(repa_layer=9)
    x, cond = batch()
    with pytest.raises(RefrainInputError, match="latent_channels"):
        tiny()(x[:, :4], torch.zeros(2), cond)


def test_tiny_preset_runs() -> None:
    model = instantiate(preset("tiny"))
    cond = DiTConditioning(
        style=torch.randn(1, 3, 384),
        style_mask=torch.ones(1, 3, dtype=torch.bool),
        lyrics=torch.zeros(1, 6).long(),
    )
    assert model(torch.randn(1, 64, 6), torch.rand(1), cond).velocity.shape == (1, 64, 6)


def test_presets_on_meta_device() -> None:
    counts = {}
    for name in ("small", "base_1b"):
        with torch.device("meta"):
            model = instantiate(preset(name))
        counts[name] = sum(p.numel() for p in model.parameters())
        assert all(p.is_meta for p in model.parameters())
    print(f"\nDiT parameters: small {counts['small'] / 1e6:.1f} M, base_1b {counts['base_1b'] / 1e9:.3f} B")
    assert 1.05e9 < counts["base_1b"] < 1.15e9  # DiffRhythm-base: about 1.1 B
    assert 1e8 < counts["small"] < 4e8


@pytest.mark.parametrize("frames", [12, 11])
def test_patch_tokens_predict_every_frame(frames: int) -> None:
    """patch_size 2: half the tokens, a velocity for every frame (an odd count too), REPA's hidden state
    one per frame (each frame its token's), and padding still never reaches a valid frame."""
    model = randomize(tiny(patch_size=2)).eval()
    x, cond = batch(t=frames, valid=(frames, 7))
    sigma = torch.tensor([0.4, 0.7])
    ref = model(x, sigma, cond, return_hidden=True)
    assert ref.velocity.shape == (2, C, frames) and ref.hidden.shape == (2, frames, 32)
    assert torch.equal(ref.hidden[:, 0], ref.hidden[:, 1]) and not torch.equal(
        ref.hidden[:, 1], ref.hidden[:, 2]
    )
    assert torch.equal(ref.velocity[1, :, 7:], torch.zeros(C, frames - 7))
    x2 = x.clone()
    x2[1, :, 7:] = 100.0  # frame 7 shares a token with the valid frame 6
    cond.lyrics[1, 7:] = 39
    out = model(x2, sigma, cond, return_hidden=True)
    assert torch.allclose(out.velocity[1, :, :7], ref.velocity[1, :, :7], atol=1e-5)
    x2[1, :, 6] += 1.0
    assert not torch.allclose(model(x2, sigma, cond).velocity[1, :, :6], ref.velocity[1, :, :6], atol=1e-4)


def test_patch_round_trip_and_token_mask() -> None:
    from refrain.models.dit.transformer import patchify, token_mask, unpatchify

    y = torch.randn(2, 7, 3)
    tokens = patchify(y, 2)
    assert tokens.shape == (2, 4, 6) and torch.equal(tokens[:, 1], torch.cat([y[:, 2], y[:, 3]], dim=-1))
    assert torch.equal(unpatchify(tokens, 2, 7), y)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    assert token_mask(mask, 2).tolist() == [[True] * 4, [True, True, False, False]]
    with pytest.raises(RefrainInputError, match="patch_size"):
        tiny(patch_size=0)


def test_patch_one_is_the_unpatched_model() -> None:
    """patch_size 1 (every bundle written before the field) builds the same parameters as before."""
    names = {name: p.shape for name, p in tiny().named_parameters()}
    assert "frame_merge.weight" not in names and names["proj_in.weight"] == (32, C)
    patched = dict(tiny(patch_size=2).named_parameters())
    assert patched["proj_in.weight"].shape == (32, 2 * C) and patched["frame_merge.weight"].shape == (32, 64)
    assert patched["final_layer.proj_out.weight"].shape == (2 * C, 32)
