"""The ACE-Step 1.5 backbone: loading, full-size shapes, conditioning paths and the capabilities it refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers.ace15 import ace15_backbone  # noqa: F401 - fixtures backbone

from refrain.errors import RefrainInputError
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.backbone import check_guidance, check_loss, spec_of
from refrain.models.backbones.ace15 import TRAIN_RECIPE, AceStep15, build_ace15, is_release_folder, load_ace15


def batch(frames: int = 20, size: int = 2) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "latent_mean": torch.randn(size, 8, frames, generator=generator),
        "frame_mask": torch.ones(size, frames, dtype=torch.bool),
        "prompts": ["calm piano", "loud rock, male vocals"][:size],
        "lyrics_text": ["[verse]\nla la", ""][:size],
    }


def test_default_configs_have_the_published_sizes_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = build_ace15({}, {})
    transformer = sum(p.numel() for p in model.transformer.parameters())
    encoder = sum(p.numel() for p in model.condition_encoder.parameters())
    print(f"transformer {transformer / 1e6:,.1f} M, condition encoder {encoder / 1e6:,.1f} M")
    assert round(transformer / 1e6, 1) == 1575.5
    assert round(encoder / 1e6, 1) == 608.4
    assert model.latent_channels == 64 and model.hidden_size == 2048


def test_a_folder_missing_part_of_the_layout_is_a_one_line_error(ace15_release: Path, tmp_path: Path) -> None:
    broken = tmp_path / "release"
    shutil.copytree(ace15_release, broken, ignore=shutil.ignore_patterns("condition_encoder"))
    assert is_release_folder(ace15_release) and not is_release_folder(broken)
    with pytest.raises(RefrainInputError, match="condition_encoder.*missing") as error:
        load_ace15(broken)
    assert "\n" not in str(error.value)
    with pytest.raises(RefrainInputError, match="repa_layer"):
        load_ace15(ace15_release, repa_layer=9)


def test_turbo_flag_and_defaults_follow_the_release(ace15_release: Path) -> None:
    base, turbo = load_ace15(ace15_release, repa_layer=2), load_ace15(ace15_release, repa_layer=2, turbo=True)
    assert base.backbone_spec.name == "ace15" and turbo.backbone_spec.name == "ace15_turbo"
    assert base.backbone_spec.sampler_defaults["guidance"] == "apg"
    assert base.backbone_spec.sampler_defaults["guidance_scale"] == 7.0
    assert turbo.backbone_spec.sampler_defaults["guidance"] == "none"
    assert base.backbone_spec.loss_preset == TRAIN_RECIPE
    assert base.backbone_spec.latent_layout == "BTC"


def test_online_and_cached_conditioning_give_the_same_batch(backbone: AceStep15) -> None:
    data = batch()
    online = backbone.conditioning_from_batch(data)
    cached = dict(
        data,
        ace15_style=online.style,
        ace15_style_mask=online.style_mask,
        ace15_lyrics=online.lyrics,
        ace15_lyrics_mask=online.lyrics_mask,
    )
    again = backbone.conditioning_from_batch(cached)
    x, sigma = data["latent_mean"], torch.tensor([0.3, 0.8])
    with torch.no_grad():
        assert torch.equal(backbone(x, sigma, online).velocity, backbone(x, sigma, again).velocity)
    # each song is encoded alone: item 0 does not depend on its batch-mate's prompt length
    alone = backbone.conditioning_from_batch({k: v[:1] for k, v in data.items()})
    length = alone.style.shape[1]
    assert torch.equal(online.style[:1, :length], alone.style) and not online.style_mask[0, length:].any()


def test_repa_hidden_state_is_one_token_per_latent_frame(backbone: AceStep15) -> None:
    data = batch(frames=21)
    cond = backbone.conditioning_from_batch(data)
    seen = []
    hook = backbone.transformer.layers[1].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        out = backbone(data["latent_mean"], torch.tensor([0.5, 0.5]), cond, return_hidden=True)
    hook.remove()
    assert out.hidden is not None and out.hidden.shape == (2, 21, backbone.hidden_size)
    assert torch.equal(out.hidden[:, 0], seen[0][:, 0]) and torch.equal(out.hidden[:, 1], seen[0][:, 0])
    assert torch.equal(out.hidden[:, 20], seen[0][:, 10])  # odd length: the last patch is padded


def test_gradient_checkpointing_changes_no_numbers(ace15_release: Path) -> None:
    plain, ckpt = (
        load_ace15(ace15_release, repa_layer=2),
        load_ace15(ace15_release, repa_layer=2, gradient_checkpointing=True),
    )
    data = batch()
    grads = []
    for model in (plain, ckpt):
        cond = model.conditioning_from_batch(data)
        model(data["latent_mean"], torch.tensor([0.4, 0.6]), cond).velocity.square().mean().backward()
        grads.append(model.transformer.layers[0].self_attn.to_q.weight.grad.clone())
    assert ckpt.transformer.is_gradient_checkpointing
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)


def test_drops_it_was_not_trained_with_are_refused_at_config_time(backbone: AceStep15) -> None:
    assert spec_of(backbone).cfg_drops == frozenset({"all", "context"})
    with pytest.raises(RefrainInputError, match="drop_lyrics_prob"):
        check_loss(backbone, FlowMatchingLoss())  # refrain's default drops lyrics alone
    check_loss(backbone, FlowMatchingLoss(**TRAIN_RECIPE))
    with pytest.raises(RefrainInputError, match="lyrics_guidance_scale"):
        check_guidance(backbone, 3.0)
    cond = backbone.conditioning_from_batch(batch()).with_dropped(lyrics=True)
    with pytest.raises(RefrainInputError, match="cannot drop the lyrics alone"):
        cond.validate()


def test_a_dropped_condition_is_the_learned_null_embedding(backbone: AceStep15) -> None:
    cond = backbone.conditioning_from_batch(batch())
    with torch.no_grad():
        dropped = backbone.encode_condition(cond.with_dropped(style=True, lyrics=True))
        kept = backbone.encode_condition(cond)
    null = backbone.condition_encoder.null_condition_emb[0, 0]
    assert torch.equal(dropped, null.expand_as(dropped)) and not torch.equal(kept, dropped)


def test_the_bundle_registry_rebuilds_it_from_its_two_configs(ace15_release: Path) -> None:
    import json

    from refrain.bundles.registry import build_model

    def config(part: str) -> dict:
        raw = json.loads((ace15_release / part / "config.json").read_text())
        return {k: v for k, v in raw.items() if not k.startswith("_")}

    built = build_model(
        {
            "class": "ace15",
            "transformer": config("transformer"),
            "condition_encoder": config("condition_encoder"),
            "repa_layer": 2,
        }
    )
    loaded = load_ace15(ace15_release, repa_layer=2)
    assert built.backbone_spec.bundle_class == "ace15"
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in loaded.state_dict().items()
    }


def test_frozen_text_outputs_are_cached_once_and_read_back_equal(ace15_release: Path, tmp_path: Path) -> None:
    from refrain.models.backbones.ace15_text import SongMeta, TextSide

    side = TextSide(ace15_release, cache_dir=tmp_path / "cache")
    online = side.encode_one("calm piano", "[verse]\nla la", SongMeta(12.0), torch.device("cpu"))
    files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert sorted(f.parent.name for f in files) == ["lyrics", "prompt"]  # Qwen3 states and lyric ids apart
    calls = []
    side._encoder.register_forward_pre_hook(lambda *_: calls.append(1))
    again = side.encode_one("calm piano", "[verse]\nla la", SongMeta(12.0), torch.device("cpu"))
    assert not calls and all(torch.equal(a, b) for a, b in zip(online, again, strict=True))
    fresh = TextSide(ace15_release, cache_dir=tmp_path / "cache")  # another process, same files
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            online,
            fresh.encode_one("calm piano", "[verse]\nla la", SongMeta(12.0), torch.device("cpu")),
            strict=True,
        )
    )
    side.encode_one(
        "calm piano", "[verse]\nla la", SongMeta(13.0), torch.device("cpu")
    )  # other metas: a new prompt entry, the lyric ids are shared
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 3 and calls
