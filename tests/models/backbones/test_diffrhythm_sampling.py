"""A DiffRhythm bundle samples through refrain's Pipeline and refrain-infer: text2music with the release's
negative-style CFG, repaint and extend through its context latent; sidecars regenerate bit for bit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from helpers.bundles import FAST_VAE, save_vae
from helpers.diffrhythm import TINY, tiny_diffrhythm

from refrain.bundles.dit import save_dit_bundle, text_encoder_ref
from refrain.cli.infer import main as infer_main
from refrain.errors import RefrainInputError
from refrain.models.backbone import spec_of
from refrain.models.backbones.diffrhythm_conditioning import DiffRhythmConditioning
from refrain.models.backbones.diffrhythm_lyrics import lines_in_window, place_lyrics
from refrain.models.backbones.diffrhythm_prompt import lrc_text, parse_token_lrc
from refrain.sampling.options import SamplerOptions
from refrain.sampling.pipeline import Pipeline
from refrain.sampling.solvers import sample
from refrain.text.vocab import PhonemeVocab

LYRICS = {"time": [0.1, 0.9], "lrc": [[10, 11, 2], [13, 4]]}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dr_bundle")
    save_vae(root / "vae", FAST_VAE)
    PhonemeVocab(["a"]).save(root / "vocab.json")
    torch.manual_seed(1)
    torch.save(torch.randn(1, TINY["text_dim"]), root / "style.pt")
    np.save(
        root / "negative.npy", np.random.default_rng(2).standard_normal(TINY["text_dim"]).astype(np.float32)
    )
    (root / "song.lrc").write_text(lrc_text(LYRICS))
    state = tiny_diffrhythm().state_dict()
    return save_dit_bundle(
        root / "bundle",
        state,
        {"class": "diffrhythm", **TINY},
        root / "vae",
        root / "vocab.json",
        text_encoder_ref(None, 32),
    )


def _options(model: torch.nn.Module, seed: int = 4) -> SamplerOptions:
    return SamplerOptions(**{**spec_of(model).sampler_defaults, "steps": 6, "sigma_min": 1 / 6}, seed=seed)


def test_token_lrc_round_trips_and_words_are_one_line() -> None:
    assert parse_token_lrc(lrc_text(LYRICS)) == (pytest.approx(LYRICS["time"]), LYRICS["lrc"])
    assert parse_token_lrc("") == ([], [])
    with pytest.raises(RefrainInputError, match="line 1.*token ids") as error:
        parse_token_lrc("[00:01.00] hello night")
    assert "\n" not in str(error.value)


def test_text2music_is_the_release_sampler_with_negative_style(bundle: Path) -> None:
    pipe = Pipeline.from_bundle(bundle)
    root = bundle.parent
    prompt = f"{root / 'style.pt'}|{root / 'negative.npy'}"
    options = _options(pipe.model)
    song = pipe.text2music(prompt, lrc_text(LYRICS), 0.8, options=options)
    frames = pipe.frames_for(0.8)
    assert song.latent.shape == (8, frames)
    # the same song written out the way python -m refrain.cli.diffrhythm sample builds it
    ids = place_lyrics(lines_in_window(LYRICS["time"], LYRICS["lrc"], 0.0, 64), 64)[:frames]
    style = torch.load(root / "style.pt", weights_only=True).reshape(1, -1)
    negative = torch.from_numpy(np.load(root / "negative.npy"))[None]
    cond = DiffRhythmConditioning(
        style, ids[None], duration=torch.tensor([frames / 64]), negative_style=negative
    )
    with torch.no_grad():
        expected = sample(
            options.guided(pipe.model, cond), pipe.model.noise(4, frames), options.sigmas(), options.solver
        )
    assert torch.equal(song.latent, expected[0])
    assert torch.equal(pipe.regenerate(song.sidecar).latent, song.latent)
    zero = pipe.text2music(str(root / "style.pt"), lrc_text(LYRICS), 0.8, options=options)
    assert (zero.latent - song.latent).abs().max() > 1e-4  # the negative style is used by CFG


def test_repaint_and_extend_use_the_context_latent(bundle: Path, tmp_path: Path) -> None:
    pipe = Pipeline.from_bundle(bundle)
    prompt = str(bundle.parent / "style.pt")
    options = _options(pipe.model, seed=7)
    source = pipe.text2music(prompt, "", 0.6, options=options)
    source.save(tmp_path / "source.flac")
    audio = tmp_path / "source.flac"
    repainted = pipe.repaint(audio, 0.2, 0.4, prompt, options=options)
    extended = pipe.extend(audio, 0.0, 0.3, prompt, options=options)
    for song in (repainted, extended):
        assert torch.isfinite(song.latent).all()
        assert torch.equal(pipe.regenerate(song.sidecar).latent, song.latent)
    assert extended.latent.shape[-1] > source.latent.shape[-1]
    # the context reaches the network: the same repaint without it (a backbone call with no context) differs
    model = pipe.model
    calls: list[bool] = []
    hook = model.register_forward_pre_hook(
        lambda m, args: calls.append(args[2].context_present().any().item())
    )
    pipe.repaint(audio, 0.2, 0.4, prompt, options=replace(options, steps=2, sigma_min=0.5))
    hook.remove()
    assert calls and any(calls)


def test_bad_prompts_and_lengths_are_one_line(bundle: Path) -> None:
    pipe = Pipeline.from_bundle(bundle)
    options = _options(pipe.model)
    for prompt, lyrics, seconds, pattern in (
        ("calm piano", "", 0.5, "calm piano"),
        ("", "", 0.5, "names no style vector"),
        (str(bundle.parent / "style.pt"), "[00:00.10] la la", 0.5, "token ids"),
        (str(bundle.parent / "style.pt"), "", 5.0, "window of 64"),
    ):
        with pytest.raises(RefrainInputError, match=pattern) as error:
            pipe.text2music(prompt, lyrics, seconds, options=options)
        assert "\n" not in str(error.value)


def test_refrain_infer_samples_a_diffrhythm_bundle_and_regenerates_it(bundle: Path, tmp_path: Path) -> None:
    root = bundle.parent
    out = tmp_path / "song.flac"
    code = infer_main(
        [
            "text2music",
            "--bundle",
            str(bundle),
            "--prompt",
            f"{root / 'style.pt'}|{root / 'negative.npy'}",
            "--lyrics_file",
            str(root / "song.lrc"),
            "--duration",
            "0.8",
            "--seed",
            "3",
            "--steps",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.is_file()
    assert infer_main(["--from_sidecar", str(out.with_suffix(".json"))]) == 0
    first, _ = soundfile.read(out)
    again, _ = soundfile.read(tmp_path / "song.again.flac")
    assert np.array_equal(first, again)
