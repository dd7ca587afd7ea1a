"""refrain's sampler over the ACE-Step 1.5 backbone reproduces diffusers' ``AceStepPipeline`` latents.

Same tiny random release folder for both sides, same starting noise; refrain builds the conditioning with
its own prompt formatting and Qwen3 encoding, samples with ``refrain.sampling`` (Euler, APG, schedule from
the backbone's sampler defaults) and must land within 1e-5 of ``output_type="latent"``.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import AceStepPipeline
from helpers.ace15 import ace15_backbone, diffusers_pipe  # noqa: F401 - fixtures backbone, pipe

from refrain.models.backbones.ace15 import AceStep15
from refrain.models.backbones.ace15_conditioning import AceStepConditioning
from refrain.models.backbones.ace15_text import SongMeta
from refrain.sampling.options import SamplerOptions
from refrain.sampling.solvers import sample

PROMPT, LYRICS, SECONDS = "dreamy synth pop, female vocals", "[verse]\nhello night\nwe sing", 2.0
TOLERANCE = 1e-5


def conditioning(
    model: AceStep15, frames: int, task: str = "text2music", **context: torch.Tensor
) -> AceStepConditioning:
    assert model.text_side is not None
    style, lyrics = model.text_side.encode_one(
        PROMPT, LYRICS, SongMeta(SECONDS, task=task), torch.device("cpu")
    )
    ones = lambda n: torch.ones(1, n, dtype=torch.bool)  # noqa: E731
    return AceStepConditioning(
        style, ones(style.shape[1]), lyrics, ones(lyrics.shape[1]), ones(frames), **context
    )


def refrain_latents(
    model: AceStep15, cond: AceStepConditioning, noise: torch.Tensor, turbo: bool
) -> torch.Tensor:
    spec = model.backbone_spec
    defaults = dict(spec.sampler_defaults)
    if turbo:
        defaults.update(guidance="none", guidance_scale=1.0)
    options = SamplerOptions(**defaults, seed=0)
    return sample(options.guided(model, cond), noise.clone(), options.sigmas(), options.solver).transpose(
        1, 2
    )


@pytest.mark.parametrize("turbo", [True, False], ids=["turbo_no_guidance", "apg_7"])
def test_text2music_matches_the_reference_pipeline(
    pipe: AceStepPipeline, backbone: AceStep15, turbo: bool
) -> None:
    frames = round(SECONDS * 25)
    noise = backbone.noise(3, frames)
    ours = refrain_latents(backbone, conditioning(backbone, frames), noise, turbo)
    ref = pipe(
        prompt=PROMPT,
        lyrics=LYRICS,
        audio_duration=SECONDS,
        guidance_scale=1.0 if turbo else 7.0,
        latents=noise.transpose(1, 2).clone(),
        output_type="latent",
    ).audios
    assert ref.shape == ours.shape == (1, frames, 8)
    assert ref.abs().max() > 1.0  # a real sample, not zeros
    assert (ours - ref).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("turbo", [True, False], ids=["turbo_no_guidance", "apg_7"])
def test_repaint_matches_the_reference_pipeline(
    pipe: AceStepPipeline, backbone: AceStep15, turbo: bool
) -> None:
    audio = 0.3 * torch.randn(2, int(SECONDS * 48000), generator=torch.Generator().manual_seed(5))
    torch.manual_seed(11)  # the pipeline samples the source posterior with the global generator
    with torch.no_grad():
        source = pipe.vae.encode(audio[None]).latent_dist.sample()
    frames = source.shape[-1]
    start, end = 0.8, 1.6
    keep = torch.ones(1, 1, frames)
    keep[..., int(start * 25) : int(end * 25)] = 0
    cond = conditioning(backbone, frames, "repaint", context=source * keep, context_mask=keep)
    noise = backbone.noise(4, frames)
    ours = refrain_latents(backbone, cond, noise, turbo)
    torch.manual_seed(11)
    ref = pipe(
        prompt=PROMPT,
        lyrics=LYRICS,
        audio_duration=SECONDS,
        guidance_scale=1.0 if turbo else 7.0,
        task_type="repaint",
        src_audio=audio,
        repainting_start=start,
        repainting_end=end,
        latents=noise.transpose(1, 2).clone(),
        output_type="latent",
    ).audios
    assert (ours - ref).abs().max().item() < TOLERANCE
    plain = refrain_latents(backbone, conditioning(backbone, frames, "repaint"), noise, turbo)
    assert (plain - ref).abs().max().item() > 1e-3  # the context latent really changed the result


def test_a_seed_draws_the_reference_pipelines_noise(pipe: AceStepPipeline, backbone: AceStep15) -> None:
    frames = 25
    seeded = pipe(
        prompt=PROMPT,
        lyrics=LYRICS,
        audio_duration=1.0,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    ).audios
    given = pipe(
        prompt=PROMPT,
        lyrics=LYRICS,
        audio_duration=1.0,
        guidance_scale=1.0,
        latents=backbone.noise(7, frames).transpose(1, 2),
        output_type="latent",
    ).audios
    assert torch.equal(seeded, given)
