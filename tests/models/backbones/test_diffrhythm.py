"""DiffRhythm-1B backbone: the release's exact tensors, strict checkpoint loading, batch independence, and
the time convention converted at the boundary (refrain's sampler reproduces the release's own ODE loop)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers.diffrhythm import TINY, diffrhythm_batch, tiny_diffrhythm

from refrain.errors import RefrainInputError
from refrain.models.backbones.diffrhythm import DiffRhythm
from refrain.models.backbones.diffrhythm_conditioning import DiffRhythmConditioning
from refrain.models.backbones.diffrhythm_load import load_diffrhythm
from refrain.sampling.options import SamplerOptions
from refrain.sampling.solvers import sample


def fixture_file() -> Path:
    root = os.environ.get("REFRAIN_FIXTURES")
    path = Path(root) / "diffrhythm_1b_keys.json" if root else None
    if path is None or not path.is_file():
        pytest.skip("REFRAIN_FIXTURES does not point at a folder with diffrhythm_1b_keys.json")
    return path


@pytest.mark.parametrize("max_frames", [2048, 6144])
def test_preset_has_exactly_the_release_tensors(max_frames: int) -> None:
    reference = json.loads(fixture_file().read_text())["max_frames"][str(max_frames)]
    with torch.device("meta"):
        model = DiffRhythm(max_frames=max_frames)
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert ours == reference["tensors"]  # every name and shape, nothing more
    assert sum(p.numel() for p in model.parameters()) == reference["parameters"]


def cond_for(batch: dict, model: DiffRhythm) -> DiffRhythmConditioning:
    return model.conditioning_from_batch(batch)


def velocity(model: DiffRhythm, seed: int = 5) -> torch.Tensor:
    batch = diffrhythm_batch(2, 12, seed=seed)
    with torch.no_grad():
        return model(batch["latent_mean"], torch.tensor([0.3, 0.8]), cond_for(batch, model)).velocity


def release_file(model: DiffRhythm, path: Path, kind: str) -> Path:
    """A checkpoint in the release's layouts: CFM prefix, EMA wrapper keys and bookkeeping entries."""
    plain = {f"transformer.{k}": v.clone() for k, v in model.state_dict().items()}
    if kind == "flat":
        torch.save(plain, path)
    elif kind == "plain":
        torch.save({"model_state_dict": plain, "step": 10}, path)
    else:  # EMA beside a different plain model: the EMA weights must win
        ema = {f"ema_model.{k}": v for k, v in plain.items()}
        ema.update(initted=torch.tensor(True), step=torch.tensor(10))
        other = {k: torch.zeros_like(v) for k, v in plain.items()}
        torch.save({"ema_model_state_dict": ema, "model_state_dict": other}, path)
    return path


@pytest.mark.parametrize("kind", ["flat", "plain", "ema"])
def test_release_checkpoint_loads_strictly(tmp_path: Path, kind: str) -> None:
    source = tiny_diffrhythm(seed=1).eval()
    path = release_file(source, tmp_path / "cfm_model.pt", kind)
    loaded = load_diffrhythm(tmp_path if kind == "flat" else path, **TINY).eval()  # a folder works too
    assert torch.equal(velocity(loaded), velocity(source))
    plain = load_diffrhythm(path, use_ema=False, **TINY).eval()  # the other copy when the file has both
    assert torch.equal(velocity(plain), velocity(source)) == (kind != "ema")


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    source = tiny_diffrhythm(seed=1)
    state = {f"transformer.{k}": v for k, v in source.state_dict().items()}
    del state["transformer.proj_out.bias"]
    state["transformer.duration_time_embed.time_mlp.0.weight"] = torch.zeros(16, 256)
    torch.save(state, tmp_path / "a.pt")
    with pytest.raises(RefrainInputError) as error:
        load_diffrhythm(tmp_path / "a.pt", **TINY)
    message = str(error.value)
    assert "\n" not in message and "a.pt" in message
    assert "1 missing keys (proj_out.bias)" in message
    assert "1 unexpected keys (duration_time_embed.time_mlp.0.weight)" in message
    assert "diffrhythm_1b_full" in message  # a duration embedding means the 6144-frame release

    torch.save({"transformer.x": argparse.Namespace(a=1)}, tmp_path / "b.pt")  # needs code to unpickle
    with pytest.raises(RefrainInputError, match="cannot be read as plain tensors") as error:
        load_diffrhythm(tmp_path / "b.pt", **TINY)
    assert "\n" not in str(error.value)
    with pytest.raises(RefrainInputError, match="not found"):
        load_diffrhythm(tmp_path / "missing", **TINY)


def test_each_batch_item_matches_running_alone() -> None:
    model = tiny_diffrhythm().eval()
    batch = diffrhythm_batch(3, 14)
    batch["frame_mask"][1, 9:] = False  # a shorter song, padded
    cond = cond_for(batch, model)
    sigma = torch.tensor([0.9, 0.4, 0.1])
    with torch.no_grad():
        together = model(batch["latent_mean"], sigma, cond).velocity
        for i, length in enumerate((14, 9, 14)):
            alone = {k: v[i : i + 1] for k, v in batch.items()}
            alone["latent_mean"] = alone["latent_mean"][..., :length]
            alone["diffrhythm_lyrics"] = alone["diffrhythm_lyrics"][:, :length]
            alone["frame_mask"] = alone["frame_mask"][:, :length]
            single = model(alone["latent_mean"], sigma[i : i + 1], cond_for(alone, model)).velocity
            torch.testing.assert_close(together[i : i + 1, :, :length], single, rtol=0, atol=2e-6)
    assert (together[0] - together[2]).abs().max() > 1e-3  # items differ: no item copied across the batch
    assert together[1, :, 9:].abs().max() == 0


def test_time_convention_is_converted_at_the_boundary() -> None:
    model = tiny_diffrhythm().eval()
    batch = diffrhythm_batch(2, 10)
    cond = cond_for(batch, model)
    x, sigma = batch["latent_mean"], torch.tensor([0.25, 0.7])
    with torch.no_grad():
        ours = model(x, sigma, cond).velocity
        flow = model.predict_flow(x.transpose(1, 2), 1 - sigma, cond)  # DiffRhythm: t = 0 noise, data - noise
    torch.testing.assert_close(ours, -flow.transpose(1, 2), rtol=0, atol=0)
    # a backbone that predicts data - noise exactly makes refrain's x0 = x - sigma v exact
    x0, noise = torch.randn(2, 8, 10), torch.randn(2, 8, 10)
    s = sigma[:, None, None]
    refrain_state = (1 - s) * x0 + s * noise  # refrain: sigma = 1 is noise
    release_state = (1 - (1 - s)) * noise + (1 - s) * x0  # DiffRhythm: (1 - t) noise + t data
    torch.testing.assert_close(refrain_state, release_state)
    torch.testing.assert_close(refrain_state - s * -(x0 - noise), x0)


def release_sampler(
    model: DiffRhythm,
    cond: DiffRhythmConditioning,
    negative: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 32,
    cfg: float = 4.0,
) -> torch.Tensor:
    """The release's loop, written out: Euler over t = linspace(0, 1, steps) on data - noise, with
    v_c + cfg (v_c - v_neg) where the negative pass drops lyrics and context and uses the negative style."""
    neg = DiffRhythmConditioning(
        negative, torch.zeros_like(cond.lyrics), cond.frame_mask, cond.start_time, context=None
    )
    y = noise.transpose(1, 2)
    grid = torch.linspace(0, 1, steps, dtype=torch.float64).tolist()
    with torch.no_grad():
        for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
            t = torch.full((y.shape[0],), t0)
            v_c, v_n = model.predict_flow(y, t, cond), model.predict_flow(y, t, neg)
            y = y + (t1 - t0) * (v_c + cfg * (v_c - v_n))
    return y.transpose(1, 2)


def test_refrain_sampler_with_the_preset_reproduces_the_release_loop() -> None:
    model = tiny_diffrhythm().eval()
    batch = diffrhythm_batch(1, 16)
    cond = cond_for(batch, model)
    negative = torch.randn(1, 16, generator=torch.Generator().manual_seed(9))
    noise = model.noise(7, 16)
    options = SamplerOptions(**model.backbone_spec.sampler_defaults, seed=7)
    grid = options.sigmas()
    torch.testing.assert_close(grid, 1 - torch.linspace(0, 1, 32, dtype=torch.float64), rtol=0, atol=1e-12)
    guided = replace(cond, negative_style=negative)
    with torch.no_grad():
        ours = sample(options.guided(model, guided), noise.clone(), grid, options.solver)
    ref = release_sampler(model, cond, negative, noise)
    assert ref.abs().max() > 0.5
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_negative_style_branch_and_drops() -> None:
    model = tiny_diffrhythm().eval()
    batch = diffrhythm_batch(1, 8)
    cond = cond_for(batch, model)
    cond.context, cond.context_mask = torch.randn(1, 8, 8), torch.ones(1, 1, 8)
    negative = torch.randn(1, 16)

    x, s = batch["latent_mean"], torch.tensor([0.5])
    with torch.no_grad():
        both = model(
            x, s, replace(cond, negative_style=negative).with_dropped(style=True, lyrics=True)
        ).velocity
        by_hand = DiffRhythmConditioning(negative, torch.zeros_like(cond.lyrics), start_time=cond.start_time)
        torch.testing.assert_close(both, model(x, s, by_hand).velocity, rtol=0, atol=1e-6)
        zero_style = model(x, s, cond.with_dropped(style=True)).velocity
        assert (zero_style - model(x, s, cond).velocity).abs().max() > 1e-4
    with pytest.raises(RefrainInputError, match="diffrhythm_style"):
        model.conditioning_from_batch({"latent_mean": x})


def test_conditioning_of_another_backbone_is_one_line() -> None:
    from refrain.models.dit.conditioning import DiTConditioning

    model = tiny_diffrhythm().eval()
    other = DiTConditioning(
        torch.randn(1, 3, 6), torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 8).long()
    )
    for call in (
        lambda: model(torch.randn(1, 8, 8), torch.tensor([0.5]), other),
        lambda: DiffRhythmConditioning.cat([other]),
    ):
        with pytest.raises(RefrainInputError, match="got a DiTConditioning") as error:
            call()
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(("preset", "frames"), [("diffrhythm_1b", 2048), ("diffrhythm_1b_full", 6144)])
def test_presets_compose_and_need_the_release_file(preset: str, frames: int, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from refrain.config import compose_config

    cfg = compose_config([f"model/dit={preset}", "data=diffrhythm", f"dataset_path={tmp_path}"])
    assert cfg.model.dit.max_frames == frames and cfg.data.max_frames == frames  # the data window follows
    with pytest.raises(RefrainInputError, match="model.dit.checkpoint") as error:
        instantiate(cfg.model.dit, _partial_=True)()  # unwrapped by Hydra: what trainer.py prints
    assert "\n" not in str(error.value)
    source = tiny_diffrhythm(max_frames=frames)
    torch.save({f"transformer.{k}": v for k, v in source.state_dict().items()}, tmp_path / "cfm_model.pt")
    sizes = {k: v for k, v in TINY.items() if k not in ("max_frames", "repa_layer")}
    model = instantiate(cfg.model.dit, checkpoint=str(tmp_path), repa_layer=2, **sizes)
    assert model.backbone_spec.name == preset and (model.duration_time_embed is not None) == (frames == 6144)


def test_blocks_return_one_tensor_so_tuple_unpacking_would_mix_items() -> None:
    """Why the backbone uses each block's tensor as is: the published ``x, *_ = block(...)`` takes item 0."""
    from refrain.models.backbones.diffrhythm_net import attention_bias

    model = tiny_diffrhythm().eval()
    h = torch.randn(3, 10, 32)
    rope = model.rotary_emb(h, torch.arange(10)[None].expand(3, -1))
    with torch.no_grad():
        out = model.transformer_blocks[0](
            h, attention_mask=attention_bias(torch.ones(3, 10).bool(), h.dtype), position_embeddings=rope
        )
    assert isinstance(out, torch.Tensor) and out.shape == h.shape
    first, *_ = out
    assert first.shape == (10, 32)  # the release's unpacking keeps batch item 0 only


def test_bfloat16_forward_is_finite() -> None:
    model = tiny_diffrhythm().eval().to(torch.bfloat16)
    batch = diffrhythm_batch(2, 12)
    batch["frame_mask"][1, 8:] = False
    with torch.no_grad():
        out = model(
            batch["latent_mean"], torch.tensor([0.3, 0.9]), model.conditioning_from_batch(batch)
        ).velocity
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and out[1, :, 8:].abs().max() == 0
