"""LoRA on ACE-Step 1.5 through refrain's LoRA task, exported for diffusers' ``AceStepPipeline``."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from diffusers import AceStepPipeline
from diffusers.utils import logging as diffusers_logging
from helpers.lora import fit_fixed_batch

from refrain.errors import RefrainInputError
from refrain.lora.config import parse_lora_spec
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.backbones.ace15 import TRAIN_RECIPE, load_ace15
from refrain.models.backbones.ace15_conditioning import AceStepConditioning
from refrain.models.backbones.ace15_lora import export_diffusers_lora
from refrain.models.backbones.ace15_text import SongMeta
from refrain.sampling.options import SamplerOptions
from refrain.sampling.solvers import sample

PROMPT, LYRICS = "dreamy synth pop", "[verse]\nhello night"
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}  # ACE-Step's schema


def fixed_batch() -> dict:
    generator = torch.Generator().manual_seed(1)
    return {
        "latent_mean": torch.randn(2, 8, 25, generator=generator),
        "latent_std": torch.full((2, 8, 25), 0.01),
        "frame_mask": torch.ones(2, 25, dtype=torch.bool),
        "prompts": [PROMPT, "slow piano ballad"],
        "lyrics_text": [LYRICS, "[chorus]\nstay"],
    }


@pytest.fixture(scope="module")
def trained(ace15_release: Path, tmp_path_factory: pytest.TempPathFactory):
    """A LoRA task over the tiny release, trained 25 steps on one batch; (task, losses, grad names)."""
    from refrain.tasks.lora_task import LoraTask

    model = load_ace15(ace15_release, repa_layer=2)
    task = LoraTask(
        model,
        parse_lora_spec(LORA, "test.json"),
        loss=FlowMatchingLoss(**TRAIN_RECIPE, masked_span_prob=0.0),
        run_dir=tmp_path_factory.mktemp("lora_run"),
    )
    losses, with_grad = fit_fixed_batch(task, fixed_batch())
    return task.eval(), losses, with_grad


def test_loss_falls_and_only_lora_weights_get_gradients(trained) -> None:
    task, losses, with_grad = trained
    print(f"flow loss on a fixed batch: {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.8 * losses[0]
    assert with_grad and all(".lora_A." in n or ".lora_B." in n for n in with_grad)
    assert all(
        ".transformer." in n for n in with_grad
    )  # scoped to the transformer: encoders stay as released
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if "lora_" in n}


def test_exported_lora_loads_in_the_diffusers_pipeline_and_matches(
    trained, ace15_release: Path, tmp_path: Path
) -> None:
    task, _, _ = trained
    peft_model = task.model.model
    export_diffusers_lora(peft_model, tmp_path / "lora")
    diffusers_logging.set_verbosity_error()
    pipe = AceStepPipeline.from_pretrained(ace15_release)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 8, 25, generator=torch.Generator().manual_seed(2))

    def reference() -> torch.Tensor:
        return pipe(
            prompt=PROMPT,
            lyrics=LYRICS,
            audio_duration=1.0,
            guidance_scale=1.0,
            latents=noise.transpose(1, 2).clone(),
            output_type="latent",
        ).audios

    base = reference()
    pipe.load_lora_weights(tmp_path / "lora")
    adapted = reference()
    backbone = peft_model.base_model.model
    style, lyrics = backbone.text_side.encode_one(PROMPT, LYRICS, SongMeta(1.0), torch.device("cpu"))
    ones = lambda n: torch.ones(1, n, dtype=torch.bool)  # noqa: E731
    cond = AceStepConditioning(style, ones(style.shape[1]), lyrics, ones(lyrics.shape[1]), ones(25))
    options = SamplerOptions(**{**backbone.backbone_spec.sampler_defaults, "guidance": "none"}, seed=0)

    def ours() -> torch.Tensor:
        return sample(options.guided(task.model, cond), noise.clone(), options.sigmas()).transpose(1, 2)

    assert (adapted - base).abs().max() > 1e-3  # the adapter does something
    assert (ours() - adapted).abs().max().item() < 1e-5
    with peft_model.disable_adapter():
        assert torch.equal(
            ours(), sample(options.guided(backbone, cond), noise.clone(), options.sigmas()).transpose(1, 2)
        )
        assert (ours() - base).abs().max().item() < 1e-5
    pipe.disable_lora()
    assert torch.equal(reference(), base)  # adapters off gives the base exactly


def test_variants_the_backbone_cannot_run_are_one_line_errors(ace15_release: Path) -> None:
    from refrain.lora.inject import inject_lora

    model = load_ace15(ace15_release, repa_layer=2)
    with pytest.raises(RefrainInputError, match="ff.net.0.proj") as error:
        inject_lora(model, parse_lora_spec({**LORA, "target_modules": ["to_q", "ff.net.0.proj"]}, "x.json"))
    assert "\n" not in str(error.value)


def test_full_fine_tune_task_aligns_the_configured_block_with_repa(
    ace15_release: Path, tmp_path: Path
) -> None:
    from refrain.losses.repa import REPALoss
    from refrain.models.teachers import TeacherSpec
    from refrain.tasks.dit_task import DiTTask

    model = load_ace15(ace15_release, repa_layer=3)
    teacher = TeacherSpec(
        name="mert", checkpoint_dir=str(tmp_path / "mert"), sample_rate=24000, feature_dim=12
    )
    repa = functools.partial(REPALoss, teachers={"mert": teacher}, projector_dim=16, weight=1.0)
    task = DiTTask(model, loss=FlowMatchingLoss(**TRAIN_RECIPE), repa=repa)
    assert task.repa is not None and task.repa.projectors["mert"][0].in_features == model.hidden_size
    batch = fixed_batch()
    batch["teacher_features"] = {"mert": torch.randn(2, 75, 12, generator=torch.Generator().manual_seed(3))}
    batch["teacher_masks"] = {"mert": torch.ones(2, 75, dtype=torch.bool)}
    seen = []
    hook = model.transformer.layers[2].register_forward_hook(lambda _m, _i, out: seen.append(out))
    terms = task.compute_loss(batch)
    hook.remove()
    assert {"flow", "repa/mert", "repa", "loss"} <= set(terms) and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    block = model.transformer.layers[2].mlp.down_proj.weight
    later = model.transformer.layers[3].mlp.down_proj.weight
    assert seen and block.grad is not None and later.grad is not None  # REPA's gradient flows into block 3


@pytest.mark.parametrize(
    "variant", ["lyric2vocal", "rapmachine", "singing2accompaniment", "stemgen", "text2sample"]
)
def test_every_shipped_variant_trains_or_is_refused_in_one_line(
    ace15_release: Path, tmp_path: Path, variant: str
) -> None:
    from refrain.lora.config import load_lora_spec
    from refrain.tasks.lora_task import LoraTask

    config = Path(__file__).resolve().parents[3] / "lora_configs" / f"{variant}.json"
    model = load_ace15(ace15_release, repa_layer=2)
    loss = FlowMatchingLoss(**TRAIN_RECIPE, masked_span_prob=0.0)
    try:
        task = LoraTask(model, load_lora_spec(config), loss=loss, run_dir=tmp_path)
    except RefrainInputError as error:
        assert "\n" not in str(error)
        return
    batch = fixed_batch()
    if task.spec.control is not None:  # StemGen / singing2accompaniment: a reference track and its label
        batch.update(reference_latent=torch.randn(2, 8, 25), instrument=torch.tensor([0, 0]))
    torch.manual_seed(0)
    task.compute_loss(batch)["loss"].backward()  # a variant that builds also trains


def test_text2sample_feeds_the_empty_lyrics_the_pipeline_feeds(ace15_release: Path, tmp_path: Path) -> None:
    """text2sample's 'lyrics always null' on ACE-Step 1.5 (no lyrics-only drop): the empty lyric prompt, so a
    song's lyrics never reach the model, and the LoRA trains on that input with gradients on LoRA only."""
    from refrain.lora.model import AdaptedDiT
    from refrain.tasks.lora_task import LoraTask

    model = load_ace15(ace15_release, repa_layer=2).eval()
    adapted = AdaptedDiT(model, null_lyrics=True)
    with_lyrics = model.prompt_conditioning(PROMPT, LYRICS, 25)
    without = model.prompt_conditioning(PROMPT, "", 25)
    x, sigma = torch.randn(1, 8, 25, generator=torch.Generator().manual_seed(0)), torch.tensor([0.6])
    with torch.no_grad():
        nulled = adapted(x, sigma, with_lyrics).velocity
        assert torch.equal(nulled, model(x, sigma, without).velocity)  # = AceStepPipeline(lyrics="")'s input
        assert (nulled - model(x, sigma, with_lyrics).velocity).abs().max() > 1e-4
    spec = parse_lora_spec({"variant": "text2sample", **LORA}, "text2sample.json")
    task = LoraTask(
        load_ace15(ace15_release, repa_layer=2),
        spec,
        loss=FlowMatchingLoss(**TRAIN_RECIPE, masked_span_prob=0.0),
        run_dir=tmp_path,
    )
    torch.manual_seed(0)
    task.compute_loss(fixed_batch())["loss"].backward()
    grads = {n for n, p in task.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
