"""LoRA at inference: adapters on a pipeline, stem/accompany modes, merged bundles equal to base + adapters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.bundles import fast_base_bundle
from helpers.lora import perturb_trainable

from refrain.bundles.dit import open_dit_bundle
from refrain.cli.lora import main as lora_main
from refrain.errors import RefrainInputError
from refrain.lora.adapters import AdapterRef, save_adapter
from refrain.lora.config import parse_lora_spec
from refrain.lora.inject import inject_lora
from refrain.lora.model import AdaptedDiT
from refrain.lora.sampling import apply_adapters, export_merged_bundle
from refrain.sampling.options import SamplerOptions
from refrain.sampling.pipeline import Pipeline

OPTIONS = SamplerOptions(steps=4, guidance="cfg", guidance_scale=3.0, guidance_interval=1.0, seed=11)
STEM = {"variant": "stemgen", "r": 4, "lora_alpha": 4, "conditioning": {"control_width": 16}}
S2A = {"variant": "singing2accompaniment", "r": 4, "lora_alpha": 4, "conditioning": {"control_width": 16}}
SAMPLE = {"variant": "text2sample", "r": 4, "lora_alpha": 8}


def make_adapter(bundle: Path, folder: Path, raw: dict, seed: int) -> Path:
    spec = parse_lora_spec(raw)
    model = inject_lora(open_dit_bundle(bundle).build_model(), spec)
    perturb_trainable(model, seed=seed, std=0.3)
    return save_adapter(model, folder, spec)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora_sampling")
    bundle = fast_base_bundle(root)
    t = np.arange(8000) / 16000.0
    reference = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]).astype(np.float32) * 0.5
    sf.write(root / "reference.flac", reference.T, 16000)
    return {
        "root": root,
        "bundle": bundle,
        "reference": root / "reference.flac",
        "stem": make_adapter(bundle, root / "stem", STEM, 1),
        "s2a": make_adapter(bundle, root / "s2a", S2A, 2),
        "sample": make_adapter(bundle, root / "sample", SAMPLE, 3),
    }


def test_stem_mode_merged_bundle_matches_base_plus_adapters(world: dict[str, Path], tmp_path: Path) -> None:
    refs = [AdapterRef(world["stem"], 0.8), AdapterRef(world["sample"], 0.5)]
    pipe = Pipeline.from_bundle(world["bundle"])
    base_song = pipe.text2music("drums", "", 0.5, options=OPTIONS)
    apply_adapters(pipe, refs)
    assert isinstance(pipe.model, AdaptedDiT) and pipe.model.null_lyrics
    song = pipe.stem(world["reference"], "drums", "tight funk drums", options=OPTIONS)
    assert song.audio.shape == (2, 8000) and np.isfinite(song.audio).all()
    assert song.sidecar["mode"] == "stem" and song.sidecar["params"]["instrument"] == "drums"
    other = pipe.stem(world["reference"], "bass", "tight funk drums", options=OPTIONS)
    assert not torch.allclose(song.latent, other.latent, atol=1e-4)  # the label matters
    with_adapters = pipe.text2music("drums", "", 0.5, options=OPTIONS)
    assert not torch.allclose(with_adapters.latent, base_song.latent, atol=1e-4)
    assert with_adapters.sidecar["bundle"]["hash"] != base_song.sidecar["bundle"]["hash"]
    again = pipe.regenerate(song.sidecar)
    assert torch.equal(again.latent, song.latent)
    merged_dir = export_merged_bundle(world["bundle"], refs, tmp_path / "merged")
    manifest = json.loads((merged_dir / "manifest.json").read_text())
    assert manifest["model"]["class"] == "lora_adapted_dit" and manifest["model"]["base"]["class"] == "dit"
    assert [a["variant"] for a in manifest["lora"]["adapters"]] == ["stemgen", "text2sample"]
    merged = Pipeline.from_bundle(merged_dir)
    assert not any("lora_" in n for n, _ in merged.model.named_parameters())
    merged_song = merged.stem(world["reference"], "drums", "tight funk drums", options=OPTIONS)
    torch.testing.assert_close(merged_song.latent, song.latent, atol=2e-4, rtol=1e-3)
    merged_t2m = merged.text2music("drums", "", 0.5, options=OPTIONS)
    torch.testing.assert_close(merged_t2m.latent, with_adapters.latent, atol=2e-4, rtol=1e-3)


def test_accompany_mode_and_wrong_adapters(world: dict[str, Path]) -> None:
    pipe = Pipeline.from_bundle(world["bundle"])
    with pytest.raises(RefrainInputError, match="mode stem: needs an adapter with a reference path"):
        pipe.stem(world["reference"], "drums", options=OPTIONS)
    apply_adapters(pipe, [AdapterRef(world["s2a"])])
    song = pipe.accompany(world["reference"], "soul band", options=OPTIONS)
    assert song.sidecar["mode"] == "accompany" and song.audio.shape == (2, 8000)
    with pytest.raises(RefrainInputError, match="generates 'stem'"):
        pipe.stem(world["reference"], "vocals", options=OPTIONS)
    with pytest.raises(RefrainInputError, match="already carries adapters"):
        apply_adapters(pipe, [AdapterRef(world["stem"])])
    stem_pipe = Pipeline.from_bundle(world["bundle"])
    apply_adapters(stem_pipe, [AdapterRef(world["stem"])])
    with pytest.raises(RefrainInputError, match="'flute' is not one the adapter was trained on"):
        stem_pipe.stem(world["reference"], "flute", options=OPTIONS)


def test_cli_stem_and_merge(world: dict[str, Path], tmp_path: Path) -> None:
    from refrain.cli.infer import main as infer_main

    out = tmp_path / "drums.flac"
    code = infer_main(
        [
            "stem",
            "--bundle",
            str(world["bundle"]),
            "--lora",
            f"{world['stem']}:0.9",
            "--source",
            str(world["reference"]),
            "--instrument",
            "drums",
            "--steps",
            "3",
            "--seed",
            "5",
            "--out",
            str(out),
            "--no_progress",
        ]
    )
    assert code == 0 and sf.info(out).frames == 8000
    assert json.loads(out.with_suffix(".json").read_text())["mode"] == "stem"
    assert (
        lora_main(
            [
                "merge",
                "--bundle",
                str(world["bundle"]),
                "--lora",
                str(world["s2a"]),
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m" / "dit.safetensors").is_file()
    assert (
        lora_main(
            [
                "merge",
                "--bundle",
                str(world["bundle"]),
                "--lora",
                str(tmp_path),
                "--out",
                str(tmp_path / "m2"),
            ]
        )
        == 2
    )
