"""--torch_compile: the backbone's blocks compiled in place, outputs within 1e-5 of eager, eager fallback."""

from __future__ import annotations

import pytest
import torch
from helpers.lora import plain_cond, tiny_dit

from refrain.cli.train import translate_argv
from refrain.models import compile as compile_module
from refrain.models.compile import compile_blocks, compile_unavailable, is_compiled
from refrain.models.dit.blocks import DiTBlock

TOLERANCE = 1e-5  # float32: inductor fuses the norms/rotary differently, so bit equality is not expected


def forward_backward(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 4, 10, generator=torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    out = model(x, torch.tensor([0.3, 0.8]), plain_cond()).velocity
    out.square().mean().backward()
    return out.detach(), model.blocks[0].attn.to_q.weight.grad.clone()


@pytest.mark.slow
def test_compiled_blocks_match_eager_and_keep_parameter_names() -> None:
    if compile_unavailable() is not None:
        pytest.skip(f"torch.compile cannot run here: {compile_unavailable()}")
    model = tiny_dit().train()
    names = [name for name, _ in model.named_parameters()]
    eager = forward_backward(model)
    assert compile_blocks(model) is None
    assert all(is_compiled(m) for m in model.modules() if isinstance(m, DiTBlock))
    assert not is_compiled(model) and [name for name, _ in model.named_parameters()] == names
    compiled = forward_backward(model)
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, atol=TOLERANCE, rtol=TOLERANCE)


def tiny_oobleck() -> torch.nn.Module:
    from refrain.models.vae.oobleck import build_oobleck_vae

    torch.manual_seed(0)
    return build_oobleck_vae(
        downsampling_ratios=[2, 4],
        channel_multiples=[1, 2],
        encoder_hidden_size=8,
        decoder_channels=8,
        latent_channels=4,
        hop_length=8,
    )


def test_an_oobleck_vaes_repeated_units_are_its_snake_activations() -> None:
    from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d

    model = tiny_oobleck()
    units, dynamic = compile_module._repeated_units(model)
    assert units and all(isinstance(m, Snake1d) for m in units) and dynamic is True
    assert len(units) == sum(isinstance(m, Snake1d) for m in model.modules())


@pytest.mark.slow
def test_compiled_vae_activations_match_eager_and_keep_parameter_names() -> None:
    """The demo VAE recipe trains with --torch_compile: same outputs and gradients, same state dict."""
    if compile_unavailable() is not None:
        pytest.skip(f"torch.compile cannot run here: {compile_unavailable()}")
    model = tiny_oobleck().train()
    audio = 0.1 * torch.randn(2, 2, 256, generator=torch.Generator().manual_seed(0))

    def forward_backward() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        out = model.decode(model.encode(audio).mode())
        out.square().mean().backward()
        alpha = next(p for name, p in model.named_parameters() if name.endswith("alpha"))
        return out.detach(), alpha.grad.clone()

    names = [name for name, _ in model.named_parameters()]
    eager = forward_backward()
    assert compile_blocks(model) is None
    assert all(is_compiled(m) for m in compile_module._repeated_units(model)[0])
    assert [name for name, _ in model.named_parameters()] == names
    compiled = forward_backward()
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, atol=TOLERANCE, rtol=TOLERANCE)


def test_platform_without_compiler_runs_eager_with_a_one_line_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        compile_module, "compile_unavailable", lambda: "InvalidCxxCompiler: no working C++ compiler"
    )
    model = tiny_dit()
    note = compile_blocks(model)
    assert note is not None and "\n" not in note and "InvalidCxxCompiler" in note and "eager" in note
    assert not any(is_compiled(m) for m in model.modules())


def test_a_model_without_blocks_is_left_eager_with_a_note() -> None:
    note = compile_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert note is not None and "eager" in note


def test_trainer_flag_sets_the_config_key() -> None:
    assert translate_argv(["--torch_compile"]) == ["torch_compile=true"]
    assert translate_argv(["--torch_compile=false"]) == ["torch_compile=false"]


def test_infer_flag_compiles_the_pipeline_model_after_its_adapters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """refrain-infer --torch_compile reaches compile_blocks with the pipeline's model (here: the fallback)."""
    from types import SimpleNamespace

    from refrain.cli import infer

    args = infer.build_parser().parse_args(
        ["text2music", "--bundle", "b", "--torch_compile", "--no_progress"]
    )
    assert args.torch_compile is True
    monkeypatch.setattr(compile_module, "compile_unavailable", lambda: "probe failed")
    seen: list[str] = []
    monkeypatch.setattr(infer, "sample_mode", lambda pipe, a: seen.append("sampled") or [])
    pipe = SimpleNamespace(model=tiny_dit(), progress=None)
    assert infer.sample_and_save(pipe, args, None) == []
    assert seen == ["sampled"]
    assert "note: torch.compile unavailable here (probe failed); running eager" in capsys.readouterr().err
