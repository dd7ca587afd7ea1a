"""A tiny random Stable Audio Open trains with refrain's LoRA (PEFT on the transformer) and flow-matching loss,
samples in the modes its contract supports through refrain's Pipeline, refuses the others in one line, and
exports (PEFT adapter folder; merged weights as a refrain DiT bundle through the registry) and reloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.stable_audio import cached_release, sao_batch
from peft import PeftModel

from refrain.bundles.dit import open_dit_bundle, save_dit_bundle, text_encoder_ref
from refrain.bundles.registry import build_model, canonical_spec
from refrain.bundles.vae import save_vae_bundle
from refrain.errors import RefrainInputError
from refrain.lora.config import parse_lora_spec
from refrain.lora.inject import inject_lora, trainable_names
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.backbone import backbone_of, spec_of
from refrain.models.backbones.stable_audio import bundle_spec, load_stable_audio
from refrain.models.vae.oobleck import OobleckVAE
from refrain.models.vae.weights import load_autoencoder
from refrain.sampling.options import SamplerOptions
from refrain.sampling.pipeline import Pipeline
from refrain.sampling.solvers import sample
from refrain.text.vocab import PhonemeVocab

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}
QUICK = {"steps": 4, "guidance": "cfg", "guidance_scale": 3.0, "guidance_interval": 1.0}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_release(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def trained(release: Path) -> tuple[PeftModel, list[float], bool]:
    """LoRA on every attention projection, 30 Adam steps on one fixed batch, fixed noise and sigma."""
    model = inject_lora(load_stable_audio(release, repa_layer=2), parse_lora_spec(LORA))
    batch = sao_batch(2, 16)
    loss_fn = FlowMatchingLoss(**{**spec_of(model).loss_preset, "drop_style_prob": 0.0})
    g = torch.Generator().manual_seed(0)
    noise, sigma = torch.randn(batch["latent_mean"].shape, generator=g), torch.tensor([0.3, 0.7])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    cond = backbone_of(model).conditioning_from_batch(batch)
    losses, grads_only_lora = [], True
    model.train()
    for _ in range(30):
        optimizer.zero_grad()
        out = loss_fn(model, batch["latent_mean"], cond, noise=noise, sigma=sigma, return_hidden=True)
        out.loss.backward()
        grads_only_lora &= all((p.grad is not None) == ("lora_" in n) for n, p in model.named_parameters())
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return model.eval(), losses, grads_only_lora


def test_lora_training_lowers_the_loss_with_only_lora_gradients(trained) -> None:
    model, losses, grads_only_lora = trained
    names = trainable_names(model)
    assert names and all("lora_" in n and ".transformer." in n for n in names)  # the DiT, not the projection
    modules = [n.split(".lora_")[0] for n in names]
    assert all(any(m.endswith("." + t) for t in LORA["target_modules"]) for m in modules)
    assert {t for t in LORA["target_modules"] if any(m.endswith("." + t) for m in modules)} == set(
        LORA["target_modules"]
    )
    assert grads_only_lora
    print(f"LoRA loss {losses[0]:.4f} -> {losses[-1]:.4f} in 30 steps")
    assert losses[-1] < 0.7 * losses[0], losses


def pipeline(model: torch.nn.Module, release: Path) -> Pipeline:
    vae = OobleckVAE(load_autoencoder(release / "vae")).eval()
    return Pipeline(model, vae, PhonemeVocab(), lambda: None, "", release, "cpu")


def test_modes_sample_with_the_adapter_and_the_rest_are_one_line(trained, release: Path) -> None:
    model, _, _ = trained
    pipe = pipeline(model, release)
    song = pipe.text2music("dreamy synth pop", "", 1.0, options=SamplerOptions(**QUICK, seed=5))
    assert song.latent.shape == (8, 22) and torch.isfinite(song.latent).all()
    assert torch.equal(pipe.regenerate(song.sidecar).latent, song.latent)
    with model.disable_adapter():
        base = pipe.text2music("dreamy synth pop", "", 1.0, options=SamplerOptions(**QUICK, seed=5))
    assert (song.latent - base.latent).abs().max() > 1e-3  # the adapter changes the song
    retake = pipe.retake(song.sidecar, 0.5, seed=9)
    assert retake.latent.shape == song.latent.shape and not torch.equal(retake.latent, song.latent)
    audio = song.audio.numpy() if isinstance(song.audio, torch.Tensor) else np.asarray(song.audio)
    a2a = pipe.audio2audio(audio, 0.6, "warm bass", options=SamplerOptions(**QUICK, seed=1))
    edited = pipe.edit(
        audio,
        "dreamy synth pop",
        "",
        "slow rock",
        None,
        preset="only_lyrics",
        options=SamplerOptions(**QUICK, seed=1),
    )
    assert torch.isfinite(a2a.latent).all() and torch.isfinite(edited.latent).all()
    for call in (
        lambda: pipe.repaint(audio, 0.2, 0.6, "slow rock", options=SamplerOptions(**QUICK, seed=1)),
        lambda: pipe.extend(audio, 0.0, 0.5, "slow rock", options=SamplerOptions(**QUICK, seed=1)),
    ):
        with pytest.raises(RefrainInputError) as error:
            call()
        assert "\n" not in str(error.value) and "stable_audio_open" in str(error.value)


def song_latent(model: torch.nn.Module, seed: int = 11) -> torch.Tensor:
    backbone = backbone_of(model)
    options = SamplerOptions(**QUICK, seed=seed)
    cond = backbone.prompt_conditioning("calm piano", "", 16)
    return sample(options.guided(model, cond), backbone.noise(seed, 16), options.sigmas(), options.solver)


def test_the_adapter_folder_reloads(trained, release: Path, tmp_path: Path) -> None:
    model, _, _ = trained
    expected = song_latent(model)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(
        load_stable_audio(release, repa_layer=2), tmp_path / "adapter"
    ).eval()
    torch.testing.assert_close(song_latent(reloaded), expected, rtol=0, atol=1e-5)


def test_merged_model_exports_as_a_bundle_and_reloads(trained, release: Path, tmp_path: Path) -> None:
    model, _, _ = trained
    expected = song_latent(model)
    copy = PeftModel.from_pretrained(
        load_stable_audio(release, repa_layer=2), _saved(model, tmp_path / "adapter")
    )
    merged = copy.merge_and_unload()
    autoencoder = load_autoencoder(release / "vae")
    shape = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in autoencoder.config.items()
        if not k.startswith("_")
    }
    save_vae_bundle(
        tmp_path / "vae",
        autoencoder,
        {"source": {"stable_audio_open": str(release)}, "model": {"vae": shape}},
    )
    PhonemeVocab(["a"]).save(tmp_path / "vocab.json")
    bundle = save_dit_bundle(
        tmp_path / "bundle",
        merged.state_dict(),
        bundle_spec(merged, text_dir=str(release)),
        tmp_path / "vae",
        tmp_path / "vocab.json",
        text_encoder_ref(None, 32),
    )
    loaded = open_dit_bundle(bundle).build_model()
    assert type(loaded).__name__ == "StableAudioOpen" and not loaded.training
    torch.testing.assert_close(song_latent(loaded), expected, rtol=0, atol=1e-5)


def test_a_runs_loader_config_rebuilds_through_the_registry(release: Path) -> None:
    """A checkpoint trained with model/dit=stable_audio_open stores load_stable_audio's arguments."""
    stored = {
        "_target_": "refrain.models.backbones.stable_audio.load_stable_audio",
        "checkpoint_dir": str(release),
        "repa_layer": 2,
        "gradient_checkpointing": False,
        "dtype": None,
    }
    spec = canonical_spec(stored, "model spec")
    assert spec["class"] == "stable_audio_open" and "checkpoint_dir" not in spec
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(load_stable_audio(release, repa_layer=2).state_dict(), strict=True)
    assert rebuilt.repa_layer == 2 and rebuilt.text_side is not None


def _saved(model: PeftModel, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder
