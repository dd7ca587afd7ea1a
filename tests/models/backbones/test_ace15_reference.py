"""StemGen and singing2accompaniment on ACE-Step 1.5: the release's lego/complete context, the instrument in
the Qwen3 prompt, parity with diffusers' ``AceStepPipeline`` for those tasks, and a LoRA that learns them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import AceStepPipeline
from helpers.ace15 import ace15_backbone, diffusers_pipe  # noqa: F401 - fixtures backbone, pipe
from helpers.lora import fit_fixed_batch

from refrain.data.multitrack import DEFAULT_STEMS
from refrain.lora.config import load_lora_spec, parse_lora_spec
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.backbones.ace15 import TRAIN_RECIPE, AceStep15, load_ace15
from refrain.models.backbones.ace15_lora import export_diffusers_lora
from refrain.models.backbones.ace15_tasks import TRACKS, reference_instruction
from refrain.sampling.options import SamplerOptions
from refrain.sampling.solvers import sample

REPO = Path(__file__).resolve().parents[3]
PROMPT, LYRICS, SECONDS = "funk, tight groove", "[verse]\nhello night", 2.0
TASKS = {  # refrain's variant -> (role family generated, instrument, diffusers' task arguments)
    "stemgen": ("stem", "drums", {"task_type": "lego", "track_name": "drums"}),
    "singing2accompaniment": (
        "rest",
        "vocals",
        {"task_type": "complete", "complete_track_classes": ["drums", "bass", "other"]},
    ),
}


def source(pipe: AceStepPipeline, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio, the latent the pipeline will sample from it): the pipeline draws the posterior sample with
    the global generator, so the same seed before both calls gives both sides the same reference latent."""
    audio = 0.3 * torch.randn(2, int(SECONDS * 48000), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(11)
    with torch.no_grad():
        latent = pipe.vae.encode(audio[None]).latent_dist.sample()
    return audio, latent


def options(model: AceStep15, guided: bool) -> SamplerOptions:
    defaults = dict(model.backbone_spec.sampler_defaults)
    if not guided:
        defaults.update(guidance="none", guidance_scale=1.0)
    return SamplerOptions(**defaults, seed=0)


def refrain_sample(model: torch.nn.Module, cond, noise: torch.Tensor, opts: SamplerOptions) -> torch.Tensor:
    return sample(opts.guided(model, cond), noise.clone(), opts.sigmas(), opts.solver).transpose(1, 2)


def reference_run(pipe: AceStepPipeline, audio: torch.Tensor, noise: torch.Tensor, guided: bool, task: dict):
    torch.manual_seed(11)
    return pipe(
        prompt=PROMPT,
        lyrics=LYRICS,
        audio_duration=SECONDS,
        guidance_scale=7.0 if guided else 1.0,
        src_audio=audio,
        latents=noise.transpose(1, 2).clone(),
        output_type="latent",
        **task,
    ).audios


@pytest.mark.parametrize("guided", [False, True], ids=["no_guidance", "apg_7"])
@pytest.mark.parametrize("variant", sorted(TASKS))
def test_reference_tasks_match_the_reference_pipeline(
    pipe: AceStepPipeline, backbone: AceStep15, variant: str, guided: bool
) -> None:
    target, instrument, task = TASKS[variant]
    audio, latent = source(pipe)
    cond = backbone.reference_conditioning(PROMPT, LYRICS, latent, target, instrument)
    noise = backbone.noise(4, latent.shape[-1])
    ours = refrain_sample(backbone, cond, noise, options(backbone, guided))
    ref = reference_run(pipe, audio, noise, guided, task)
    diff = (ours - ref).abs().max().item()
    print(f"{variant} ({task['task_type']}), {'APG 7' if guided else 'no guidance'}: max |diff| {diff:.2e}")
    assert diff < 1e-5
    text2music = backbone.prompt_conditioning(PROMPT, LYRICS, latent.shape[-1])
    plain = refrain_sample(backbone, text2music, noise, options(backbone, guided))
    assert (plain - ref).abs().max().item() > 1e-3  # reference and instruction really changed the song


def test_the_instrument_is_named_in_the_prompt_and_the_reference_in_the_context(backbone: AceStep15) -> None:
    assert reference_instruction("stem", "drums") == "Generate the DRUMS track based on the audio context:"
    assert reference_instruction("rest", "vocals") == "Complete the input track with DRUMS | BASS | OTHER:"
    assert TRACKS == DEFAULT_STEMS  # the stems complete names are the multitrack layout's
    latent = torch.randn(1, 8, 25, generator=torch.Generator().manual_seed(0))
    drums = backbone.reference_conditioning(PROMPT, LYRICS, latent, "stem", "drums")
    bass = backbone.reference_conditioning(PROMPT, LYRICS, latent, "stem", "bass")
    assert drums.style.shape != bass.style.shape or not torch.equal(drums.style, bass.style)
    context = backbone.context_latents(drums, latent.transpose(1, 2))
    assert torch.equal(context[..., :8], latent.transpose(1, 2)) and bool((context[..., 8:] == 1).all())
    dropped = backbone.context_latents(drums.with_dropped(context=True), latent.transpose(1, 2))
    plain = backbone.context_latents(replace(drums, reference=None), latent.transpose(1, 2))
    assert torch.equal(dropped, plain)  # a dropped reference is the text2music context


def paired_batch(labels: list[int]) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {
        "latent_mean": torch.randn(2, 8, 25, generator=generator),
        "latent_std": torch.full((2, 8, 25), 0.01),
        "frame_mask": torch.ones(2, 25, dtype=torch.bool),
        "prompts": [PROMPT, "slow piano ballad"],
        "lyrics_text": [LYRICS, "[chorus]\nstay"],
        "reference_latent": torch.randn(2, 8, 25, generator=generator),
        "instrument": torch.tensor(labels),
    }


LABELS = {"stemgen": [1, 2], "singing2accompaniment": [0, 0]}  # drums, bass / vocals in the shipped JSONs


@pytest.fixture(scope="module", params=sorted(LABELS))
def trained(request: pytest.FixtureRequest, ace15_release: Path, tmp_path_factory: pytest.TempPathFactory):
    """A LoRA task of the shipped variant's JSON over the tiny release, trained 25 steps on one paired batch."""
    from refrain.tasks.lora_task import LoraTask

    variant = request.param
    raw = load_lora_spec(REPO / "lora_configs" / f"{variant}.json").to_dict()
    raw.update(r=4, lora_alpha=8)
    task = LoraTask(
        load_ace15(ace15_release, repa_layer=2),
        parse_lora_spec(raw, f"{variant}.json"),
        loss=FlowMatchingLoss(**TRAIN_RECIPE, masked_span_prob=0.0),
        run_dir=tmp_path_factory.mktemp("stemgen_run"),
    )
    losses, with_grad = fit_fixed_batch(task, paired_batch(LABELS[variant]))
    return task.eval(), losses, with_grad, variant


def test_the_lora_learns_on_a_fixed_batch_with_lora_weights_only(trained) -> None:
    task, losses, with_grad, variant = trained
    print(f"{variant} LoRA flow loss on a fixed batch: {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.8 * losses[0]
    assert with_grad and all(".lora_A." in n or ".lora_B." in n for n in with_grad)
    assert not any("reference_control" in n for n, _ in task.named_parameters())  # the release's own input
    backbone = task.model.model.base_model.model
    cond = task.conditioning(paired_batch(LABELS[variant]))  # instrument names reach the Qwen3 prompt
    target, instrument, _ = TASKS[variant]
    alone = backbone.reference_conditioning(PROMPT, LYRICS, torch.zeros(1, 8, 25), target, instrument)
    assert torch.equal(cond.style[0, : alone.style.shape[1]], alone.style[0])


def test_the_lora_in_diffusers_lego_or_complete_matches_refrain(
    trained, pipe: AceStepPipeline, tmp_path: Path
) -> None:
    task, _, _, variant = trained
    target, instrument, diffusers_task = TASKS[variant]
    export_diffusers_lora(task.model.model, tmp_path / "lora")
    audio, latent = source(pipe, seed=6)
    backbone = task.model.model.base_model.model
    cond = backbone.reference_conditioning(PROMPT, LYRICS, latent, target, instrument)
    noise = backbone.noise(5, latent.shape[-1])
    opts = options(backbone, guided=False)
    base = reference_run(pipe, audio, noise, False, diffusers_task)
    pipe.load_lora_weights(tmp_path / "lora")
    assert any(m.training for m in pipe.transformer.modules())  # diffusers leaves the new lora_dropout on
    pipe.transformer.eval()  # stemgen.json has lora_dropout 0.05: sample in eval mode, as refrain does
    try:
        adapted = reference_run(pipe, audio, noise, False, diffusers_task)
    finally:
        pipe.unload_lora_weights()
    ours = refrain_sample(task.model, cond, noise, opts)
    diff = (ours - adapted).abs().max().item()
    print(
        f"{variant} LoRA in AceStepPipeline(task_type={diffusers_task['task_type']!r}) vs refrain: {diff:.2e}"
    )
    assert (adapted - base).abs().max() > 1e-4 and diff < 1e-5


def test_the_release_itself_runs_stem_and_accompany_without_an_adapter(
    ace15_release: Path, tmp_path: Path
) -> None:
    """ACE-Step 1.5 was trained on lego/complete, so refrain's stem/accompany modes run on the bare release."""
    import numpy as np

    import refrain.lora  # noqa: F401 - registers the stem and accompany modes
    from refrain.sampling.pipeline import Pipeline

    pipe = Pipeline.from_release(ace15_release)
    import soundfile as sf

    audio = (0.2 * np.random.default_rng(0).standard_normal((2, 48000))).astype(np.float32)
    sf.write(tmp_path / "source.wav", audio.T, 48000, subtype="FLOAT")
    opts = SamplerOptions(steps=4, guidance="none", seed=1)
    drums = pipe.stem(tmp_path / "source.wav", "drums", prompt=PROMPT, options=opts)
    band = pipe.accompany(tmp_path / "source.wav", prompt=PROMPT, options=opts)
    assert drums.audio.shape == band.audio.shape == audio.shape
    assert (drums.latent - band.latent).abs().max() > 1e-3  # the instruction names another task
    assert torch.equal(pipe.regenerate(drums.sidecar).latent, drums.latent)
