"""The Stable Audio Open backbone: the exact EDM <-> flow conversion at its boundary, its conditioning and
padding, and the one-line errors for what a user may get wrong (folder, loss, guidance, context)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import CosineDPMSolverMultistepScheduler
from helpers.stable_audio import CHANNELS, cached_release, sao_batch

from refrain.errors import RefrainInputError
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.models.backbone import check_guidance, check_loss
from refrain.models.backbones.stable_audio import (
    StableAudioOpen,
    edm_time,
    edm_to_flow,
    flow_to_edm,
    load_stable_audio,
    velocity_from_output,
)

S_GRID = torch.tensor([1e-4, 0.05, 0.3, 0.5, 0.77, 0.95, 0.998], dtype=torch.float64)


@pytest.fixture(scope="module")
def sao_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_release(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def model(sao_release: Path) -> StableAudioOpen:
    return load_stable_audio(sao_release, repa_layer=2).eval()


def test_flow_and_edm_states_are_the_same_point() -> None:
    g = torch.Generator().manual_seed(0)
    x0, n = (torch.randn(len(S_GRID), 4, 6, generator=g, dtype=torch.float64) for _ in range(2))
    s = S_GRID[:, None, None]
    x_s = (1 - s) * x0 + s * n
    x_edm, sigma = flow_to_edm(x_s, S_GRID)
    torch.testing.assert_close(sigma, S_GRID / (1 - S_GRID), rtol=0, atol=1e-12)
    torch.testing.assert_close(x_edm, x0 + sigma[:, None, None] * n, rtol=1e-9, atol=1e-6)  # x0 + sigma n
    back, s_back = edm_to_flow(x_edm, sigma)
    torch.testing.assert_close(back, x_s, rtol=0, atol=1e-6)
    torch.testing.assert_close(s_back, S_GRID, rtol=0, atol=1e-12)
    torch.testing.assert_close(edm_time(S_GRID), torch.atan(sigma) * 2 / math.pi, rtol=0, atol=1e-12)
    assert edm_time(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist() == [0.0, 1.0]


def test_the_release_v_target_becomes_refrains_velocity_target() -> None:
    """If the network output is the v-objective's target alpha n - beta x0, the backbone returns n - x0."""
    g = torch.Generator().manual_seed(1)
    x0, n = (torch.randn(len(S_GRID), 4, 6, generator=g, dtype=torch.float64) for _ in range(2))
    s = S_GRID[:, None, None]
    sigma = s / (1 - s)
    alpha, beta = 1 / torch.sqrt(1 + sigma**2), sigma / torch.sqrt(1 + sigma**2)  # the cosine schedule
    v_release = alpha * n - beta * x0
    velocity = velocity_from_output((1 - s) * x0 + s * n, S_GRID, v_release)
    torch.testing.assert_close(velocity, n - x0, rtol=0, atol=1e-6)


def test_velocity_is_the_released_edm_preconditioning(model: StableAudioOpen) -> None:
    """Against diffusers' released scheduler: c_in, the time input and c_skip/c_out, in float64, to 1e-6."""
    net = load_stable_audio(model.text_side.root).double().eval()  # type: ignore[union-attr]
    scheduler = CosineDPMSolverMultistepScheduler()
    batch = sao_batch(1, 10)
    cond = net.conditioning_from_batch(batch).to("cpu", torch.float64)
    x = torch.randn(1, CHANNELS, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cross, global_states = net.condition_states(cond, torch.float64)
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    rotary = get_1d_rotary_pos_embed(4, 11, use_real=True, repeat_interleave_real=False)
    for s in S_GRID.tolist():
        x_edm, sigma = flow_to_edm(x, torch.tensor(s, dtype=torch.float64))
        with torch.no_grad():
            out = net.transformer(
                scheduler.precondition_inputs(x_edm, sigma),
                scheduler.precondition_noise(sigma)[None],
                encoder_hidden_states=cross,
                global_hidden_states=global_states,
                rotary_embedding=rotary,
                return_dict=False,
            )[0]
            denoised = scheduler.precondition_outputs(x_edm, out, sigma)
            ours = net(x, torch.tensor([s], dtype=torch.float64), cond).velocity
        torch.testing.assert_close(ours, (x - denoised) / s, rtol=0, atol=1e-6)
    with torch.no_grad():  # sigma = infinity and 0 are finite in flow units, and continuous there
        ends = [
            net(x, torch.tensor([v], dtype=torch.float64), cond).velocity for v in (1.0, 1 - 1e-9, 0.0, 1e-9)
        ]
    assert all(torch.isfinite(v).all() for v in ends)
    torch.testing.assert_close(ends[0], ends[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(ends[2], ends[3], rtol=0, atol=1e-6)


def test_conditioning_reads_prompt_and_seconds(model: StableAudioOpen) -> None:
    batch = sao_batch(2, 12)
    cond = model.conditioning_from_batch(batch)
    assert cond.text.shape == (2, 12, 16) and cond.text_mask[:, 0].all() and not cond.text_mask[:, -1].any()
    torch.testing.assert_close(cond.seconds_start, torch.tensor([0.0, 12.5]))
    torch.testing.assert_close(cond.seconds_total, torch.tensor([0.0, 12.5]) + 12 / model.frame_rate)
    x, sigma = batch["latent_mean"], torch.tensor([0.5, 0.5])
    with torch.no_grad():
        base = model(x, sigma, cond).velocity
        later = cond.to("cpu")
        later.seconds_total = later.seconds_total + 30
        assert (model(x, sigma, later).velocity - base).abs().max() > 1e-4  # the seconds reach the model


def test_an_items_output_does_not_depend_on_its_batch_mates_padding(model: StableAudioOpen) -> None:
    batch = sao_batch(2, 12)
    batch["frame_mask"][1, 7:] = False
    cond = model.conditioning_from_batch(batch)
    x, sigma = batch["latent_mean"], torch.tensor([0.4, 0.6])
    alone = {k: v[1:] if k != "prompts" else v[1:] for k, v in batch.items()}
    alone["latent_mean"], alone["frame_mask"] = alone["latent_mean"][..., :7], alone["frame_mask"][:, :7]
    with torch.no_grad():
        both = model(x, sigma, cond).velocity
        single = model(alone["latent_mean"], sigma[1:], model.conditioning_from_batch(alone)).velocity
    torch.testing.assert_close(both[1:, :, :7], single, rtol=0, atol=1e-5)
    assert both[1, :, 7:].abs().max() == 0


def test_what_the_backbone_cannot_do_is_one_line(
    model: StableAudioOpen, sao_release: Path, tmp_path: Path
) -> None:
    errors = []
    with pytest.raises(RefrainInputError) as error:
        check_loss(model, FlowMatchingLoss())  # refrain's default drops lyrics alone
    errors.append(error)
    with pytest.raises(RefrainInputError) as error:
        check_guidance(model, 3.0)
    errors.append(error)
    with pytest.raises(RefrainInputError) as error:
        model.prompt_conditioning("calm piano", "", 8, context=torch.zeros(1, CHANNELS, 8))
    errors.append(error)
    with pytest.raises(RefrainInputError) as error:
        load_stable_audio(tmp_path / "nowhere")
    errors.append(error)
    broken = tmp_path / "release"
    shutil.copytree(sao_release, broken)
    (broken / "projection_model" / "config.json").unlink()
    with pytest.raises(RefrainInputError) as error:
        load_stable_audio(broken)
    errors.append(error)
    assert "projection_model" in str(errors[-1].value)
    for weights in (broken / "transformer").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    shutil.copytree(sao_release / "projection_model", broken / "projection_model", dirs_exist_ok=True)
    with pytest.raises(RefrainInputError) as error:
        load_stable_audio(broken)  # only pickled weights: refused, never loaded
    errors.append(error)
    assert all("\n" not in str(e.value) for e in errors)
    check_loss(model, FlowMatchingLoss(**model.backbone_spec.loss_preset))  # its own preset is accepted


def test_cached_t5_states_are_the_online_ones(sao_release: Path, tmp_path: Path) -> None:
    online = load_stable_audio(sao_release)
    cached = load_stable_audio(sao_release, dataset_path=tmp_path / "dataset")
    batch = sao_batch(2, 8)
    first = cached.conditioning_from_batch(batch)  # fills the cache
    files = sorted((tmp_path / "dataset" / "cache" / "stable_audio_t5").rglob("*.safetensors"))
    assert len(files) == 2
    reread = load_stable_audio(sao_release, dataset_path=tmp_path / "dataset")
    reread.text_side._load = None  # type: ignore[method-assign, union-attr]  # the encoder must not run again
    again, plain = reread.conditioning_from_batch(batch), online.conditioning_from_batch(batch)
    for cond in (first, again):
        assert torch.equal(cond.text, plain.text) and torch.equal(cond.text_mask, plain.text_mask)
