"""refrain's Pipeline and refrain-infer over an ACE-Step 1.5 release folder: same songs as diffusers' pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from diffusers import AceStepPipeline
from diffusers.utils import logging as diffusers_logging

from refrain.sampling.options import SamplerOptions
from refrain.sampling.pipeline import Pipeline

PROMPT, LYRICS = "synth pop, female vocals", "[verse]\nhello night\nwe sing"


@pytest.fixture(scope="module")
def pipe(ace15_release: Path) -> Pipeline:
    return Pipeline.from_release(ace15_release)


@pytest.mark.parametrize("guided", [False, True], ids=["no_guidance", "apg_7"])
def test_text2music_is_the_reference_pipelines_song_for_a_seed(
    pipe: Pipeline, ace15_release: Path, guided: bool
) -> None:
    defaults = dict(pipe.model.backbone_spec.sampler_defaults)
    if not guided:
        defaults.update(guidance="none", guidance_scale=1.0)
    song = pipe.text2music(PROMPT, LYRICS, 2.0, options=SamplerOptions(**defaults, seed=7))
    diffusers_logging.set_verbosity_error()
    reference = AceStepPipeline.from_pretrained(ace15_release)
    reference.set_progress_bar_config(disable=True)
    latents = reference(
        prompt=PROMPT,
        lyrics=LYRICS,
        audio_duration=2.0,
        guidance_scale=7.0 if guided else 1.0,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    ).audios
    assert song.latent.shape == (8, 50)
    assert (song.latent.T[None] - latents).abs().max().item() < 1e-5
    assert torch.equal(pipe.regenerate(song.sidecar).latent, song.latent)


@pytest.mark.slow
def test_refrain_infer_uses_the_backbones_defaults_and_regenerates_bit_exact(
    ace15_release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from refrain.cli.infer import main

    out = tmp_path / "song.flac"
    argv = [
        "text2music",
        "--bundle",
        str(ace15_release),
        "--prompt",
        PROMPT,
        "--lyrics",
        LYRICS,
        "--duration",
        "1.0",
        "--seed",
        "3",
        "--out",
        str(out),
        "--no_progress",
    ]
    assert main(argv) in (0, None), capsys.readouterr().err[-2000:]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["options"]["steps"] == 8 and sidecar["options"]["guidance"] == "apg"
    assert sidecar["options"]["apg_dims"] == [-1] and sidecar["bundle"]["path"] == str(
        ace15_release.resolve()
    )
    assert "<unk>" not in capsys.readouterr().err  # the backbone reads the raw lyrics, not phonemes
    assert main(["--from_sidecar", str(out.with_suffix(".json")), "--no_progress"]) in (0, None)
    again, _ = sf.read(tmp_path / "song.again.flac")
    first, _ = sf.read(out)
    assert np.array_equal(first, again)


def test_repaint_keeps_the_audio_outside_the_region(pipe: Pipeline) -> None:
    audio = (0.2 * np.random.default_rng(0).standard_normal((2, 48000))).astype(np.float32)
    song = pipe.repaint(
        audio,
        0.4,
        0.6,
        PROMPT,
        LYRICS,
        crossfade=0.0,
        options=SamplerOptions(steps=4, guidance="none", seed=1),
    )
    assert song.audio.shape == audio.shape
    np.testing.assert_array_equal(
        song.audio[:, :9600], audio[:, :9600]
    )  # before the region: the source itself
