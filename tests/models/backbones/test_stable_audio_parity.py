"""refrain's sampler over the Stable Audio Open backbone reproduces diffusers' ``StableAudioPipeline`` latents.

The release's scheduler (``CosineDPMSolverMultistepScheduler``) is an SDE solver driven by a Brownian tree,
so no other sampler can follow it draw for draw. The parity runs use diffusers' deterministic
``EDMEulerScheduler`` with the release's preconditioning (v-prediction, sigma_data 1, the exponential
0.3 .. 500 sigma grid, and the release's time input atan(sigma) 2 / pi, taken from the released scheduler's
own ``precondition_noise``). refrain samples the same grid converted to flow units, s = sigma / (1 + sigma),
from the same starting point x_s = x_EDM / (1 + sigma), with its own Euler solver and CFG, and must land
within 1e-5 of ``output_type="latent"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import CosineDPMSolverMultistepScheduler, EDMEulerScheduler, StableAudioPipeline
from diffusers.utils import logging as diffusers_logging
from helpers.stable_audio import FRAMES, cached_release

from refrain.models.backbones.stable_audio import StableAudioOpen, edm_to_flow, load_stable_audio
from refrain.models.backbones.stable_audio_conditioning import StableAudioConditioning
from refrain.sampling.options import SamplerOptions
from refrain.sampling.solvers import sample

PROMPT, START, END = "dreamy synth pop female vocals", 0.0, 1.0
TOLERANCE = 1e-5


class ReleaseEulerScheduler(EDMEulerScheduler):
    """EDM Euler (deterministic) with the release's time input instead of EDM's 0.25 log(sigma)."""

    precondition_noise = CosineDPMSolverMultistepScheduler.precondition_noise


@pytest.fixture(scope="module")
def sao_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_release(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def pipe(sao_release: Path) -> StableAudioPipeline:
    diffusers_logging.set_verbosity_error()
    scheduler = ReleaseEulerScheduler(
        sigma_min=0.3,
        sigma_max=500.0,
        sigma_data=1.0,
        sigma_schedule="exponential",
        prediction_type="v_prediction",
    )
    pipeline = StableAudioPipeline.from_pretrained(sao_release, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def backbone(sao_release: Path) -> StableAudioOpen:
    return load_stable_audio(sao_release).eval()


def conditioning(model: StableAudioOpen) -> StableAudioConditioning:
    assert model.text_side is not None
    text, mask = model.text_side.encode([PROMPT], torch.device("cpu"))
    seconds = lambda v: torch.tensor([v])  # noqa: E731
    return StableAudioConditioning(
        text, mask, seconds(START), seconds(END), torch.ones(1, FRAMES, dtype=torch.bool)
    )


@pytest.mark.parametrize("scale", [1.0, 7.0], ids=["no_guidance", "cfg_7"])
def test_text2music_matches_the_reference_pipeline(
    pipe: StableAudioPipeline, backbone: StableAudioOpen, scale: float
) -> None:
    steps = 8
    noise = backbone.noise(3, FRAMES)
    ref = pipe(
        prompt=PROMPT,
        audio_start_in_s=START,
        audio_end_in_s=END,
        num_inference_steps=steps,
        guidance_scale=scale,
        latents=noise.clone(),
        output_type="latent",
    ).audios
    edm_sigmas = pipe.scheduler.sigmas.double()  # the grid the pipeline just ran, ending at 0
    flow_sigmas = edm_to_flow(edm_sigmas, edm_sigmas)[1]
    x_start = edm_to_flow(noise.double() * pipe.scheduler.init_noise_sigma, edm_sigmas[0])[0].float()
    options = SamplerOptions(
        steps=steps,
        solver="euler",
        guidance="none" if scale == 1.0 else "cfg",
        guidance_scale=scale,
        guidance_interval=1.0,
        seed=0,
    )
    ours = sample(options.guided(backbone, conditioning(backbone)), x_start, flow_sigmas, options.solver)
    assert ref.shape == ours.shape == (1, 8, FRAMES)
    assert ref.abs().max() > 0.5  # a real sample, not zeros
    print(
        f"cfg {scale}: max |refrain - pipeline| = {(ours - ref).abs().max().item():.2e}, max |x0| = {ref.abs().max():.3f}"
    )
    assert (ours - ref).abs().max().item() < TOLERANCE


def test_the_time_input_is_what_parity_rests_on(pipe: StableAudioPipeline, backbone: StableAudioOpen) -> None:
    """EDM's own time input (0.25 log sigma) gives another song: the parity above is not loose."""
    plain = EDMEulerScheduler.from_config(pipe.scheduler.config)
    other = StableAudioPipeline(**{**pipe.components, "scheduler": plain})
    other.set_progress_bar_config(disable=True)
    args = {
        "prompt": PROMPT,
        "audio_end_in_s": END,
        "num_inference_steps": 8,
        "guidance_scale": 1.0,
        "output_type": "latent",
    }
    noise = backbone.noise(3, FRAMES)
    edm_time = other(**args, latents=noise.clone()).audios
    release_time = pipe(**args, latents=noise.clone()).audios
    assert (edm_time - release_time).abs().max() > 1e-3


def test_a_seed_draws_the_reference_pipelines_noise(sao_release: Path, backbone: StableAudioOpen) -> None:
    """With the release's own (SDE, torchsde) scheduler: a seed and refrain's noise for it are one start."""
    released = StableAudioPipeline.from_pretrained(sao_release)
    released.set_progress_bar_config(disable=True)
    assert isinstance(released.scheduler, CosineDPMSolverMultistepScheduler)
    args = {"prompt": PROMPT, "audio_end_in_s": END, "num_inference_steps": 4, "output_type": "latent"}
    seeded = released(**args, generator=torch.Generator().manual_seed(7)).audios
    given = released(
        **args, latents=backbone.noise(7, FRAMES), generator=torch.Generator().manual_seed(7)
    ).audios
    assert torch.equal(seeded, given)
