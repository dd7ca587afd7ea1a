"""A tiny random DiffRhythm trains with refrain's LoRA and flow-matching loss, samples with the release's
negative-style CFG, and exports (PEFT adapter folder; merged weights as a refrain DiT bundle) and reloads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers.bundles import FAST_VAE, save_vae
from helpers.diffrhythm import TINY, diffrhythm_batch, tiny_diffrhythm
from peft import PeftModel

from refrain.bundles.dit import open_dit_bundle, save_dit_bundle, text_encoder_ref
from refrain.lora.config import parse_lora_spec
from refrain.lora.inject import inject_lora, trainable_names
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.backbone import backbone_of, spec_of
from refrain.sampling.options import SamplerOptions
from refrain.sampling.solvers import sample
from refrain.text.vocab import PhonemeVocab

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


@pytest.fixture(scope="module")
def trained() -> tuple[PeftModel, list[float], dict]:
    """LoRA on every attention projection, 30 Adam steps on one fixed batch, fixed noise and sigma."""
    model = inject_lora(tiny_diffrhythm(), parse_lora_spec(LORA))
    batch = diffrhythm_batch(2, 16)
    loss_fn = FlowMatchingLoss(
        **{**spec_of(model).loss_preset, "drop_style_prob": 0.0, "drop_lyrics_prob": 0.0}
    )
    g = torch.Generator().manual_seed(0)
    noise, sigma = torch.randn(batch["latent_mean"].shape, generator=g), torch.tensor([0.3, 0.7])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses, grads_ok = [], True
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        cond = backbone_of(model).conditioning_from_batch(batch)
        out = loss_fn(model, batch["latent_mean"], cond, noise=noise, sigma=sigma, return_hidden=True)
        out.loss.backward()
        grads_ok &= all((p.grad is not None) == ("lora_" in name) for name, p in model.named_parameters())
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return model.eval(), losses, {"batch": batch, "grads_only_lora": grads_ok}


def test_lora_training_lowers_the_loss_with_only_lora_gradients(trained) -> None:
    model, losses, info = trained
    names = trainable_names(model)
    assert names and all("lora_" in n for n in names)
    assert all(n.split(".lora_")[0].rsplit(".", 1)[-1] in LORA["target_modules"] for n in names)
    assert info["grads_only_lora"]
    assert losses[-1] < 0.7 * losses[0], losses


def text2music(model, cond, negative: torch.Tensor, frames: int, seed: int = 11) -> torch.Tensor:
    backbone = backbone_of(model)
    preset = {
        **spec_of(model).sampler_defaults,
        "steps": 8,
        "sigma_min": 1 / 8,
    }  # the preset's grid, fewer steps
    options = SamplerOptions(**preset, seed=seed)
    with torch.no_grad():
        return sample(
            options.guided(model, replace(cond, negative_style=negative)),
            backbone.noise(seed, frames),
            options.sigmas(),
            options.solver,
        )


def test_adapted_model_samples_and_the_adapter_folder_reloads(trained, tmp_path: Path) -> None:
    model, _, info = trained
    batch = {k: v[:1] for k, v in info["batch"].items()}
    cond = backbone_of(model).conditioning_from_batch(batch)
    negative = torch.randn(1, 16, generator=torch.Generator().manual_seed(4))
    song = text2music(model, cond, negative, 16)
    assert song.shape == (1, 8, 16) and torch.isfinite(song).all()
    with model.disable_adapter():
        base_song = text2music(model, cond, negative, 16)
    assert (song - base_song).abs().max() > 1e-3  # the adapter changes the song
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_diffrhythm(), tmp_path / "adapter").eval()
    torch.testing.assert_close(text2music(reloaded, cond, negative, 16), song, rtol=0, atol=1e-5)


def test_merged_model_exports_as_a_bundle_and_reloads(trained, tmp_path: Path) -> None:
    model, _, info = trained
    batch = {k: v[:1] for k, v in info["batch"].items()}
    cond = backbone_of(model).conditioning_from_batch(batch)
    negative = torch.zeros(1, 16)
    with torch.no_grad():
        expected = text2music(model, cond, negative, 16)
    copy = PeftModel.from_pretrained(tiny_diffrhythm(), _save(model, tmp_path / "adapter"))  # fixture kept
    state = copy.merge_and_unload().state_dict()
    save_vae(tmp_path / "vae", FAST_VAE)
    PhonemeVocab(["a"]).save(tmp_path / "vocab.json")
    spec = {"class": "diffrhythm", **TINY}
    bundle = save_dit_bundle(
        tmp_path / "bundle",
        state,
        spec,
        tmp_path / "vae",
        tmp_path / "vocab.json",
        text_encoder_ref(None, 32),
    )
    loaded = open_dit_bundle(bundle).build_model()
    assert type(loaded).__name__ == "DiffRhythm" and not loaded.training
    torch.testing.assert_close(text2music(loaded, cond, negative, 16), expected, rtol=0, atol=1e-5)


def _save(model: PeftModel, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder


def test_reference_stem_variants_are_refused_in_one_line() -> None:
    from refrain.errors import RefrainInputError
    from refrain.lora.config import load_lora_spec

    spec = load_lora_spec(Path(__file__).resolve().parents[3] / "lora_configs" / "stemgen.json")
    with pytest.raises(RefrainInputError, match="no `conditioner`") as error:
        inject_lora(tiny_diffrhythm(), spec)
    assert "\n" not in str(error.value)
