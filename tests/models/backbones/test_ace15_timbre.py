"""ACE-Step 1.5's timbre reference (``model.dit.timbre``): each song's own reference for training, cached once
and equal to the online one, and the reference-audio path of the sampler, which is diffusers' pipeline's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from diffusers.models.autoencoders.autoencoder_oobleck import OobleckDiagonalGaussianDistribution
from helpers.ace15 import ace15_low_rate_release, ace15_release, vae_encodes  # noqa: F401 - fixtures

from refrain.errors import RefrainInputError
from refrain.models.backbones.ace15 import AceStep15, load_ace15
from refrain.models.backbones.ace15_timbre import TimbreSide, reference_latents, timbre_cache_dir

RATE = 1200  # the low-rate release's VAE


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two songs of different timbre (a tone and noise), 40 s and 7 s at the VAE's rate."""
    root = tmp_path_factory.mktemp("timbre_songs")
    t = np.arange(40 * RATE) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 110 * t)
    noise = 0.2 * np.random.default_rng(0).standard_normal(7 * RATE)
    paths = []
    for name, mono in (("tone", tone), ("noise", noise)):
        path = root / f"{name}.wav"
        sf.write(path, np.stack([mono, 0.5 * mono]).T.astype(np.float32), RATE, subtype="FLOAT")
        paths.append(path)
    return paths


def song_batch(paths: list[Path], frames: int = 12) -> dict[str, object]:
    """A DiT batch as refrain's collate builds it (the fields the ace15 backbone reads)."""
    return {
        "frame_mask": torch.ones(len(paths), frames, dtype=torch.bool),
        "prompts": ["synth pop"] * len(paths),
        "lyrics_text": ["[verse]\nla la"] * len(paths),
        "content_hashes": [f"hash{i}" for i in range(len(paths))],
        "filenames": [str(p) for p in paths],
    }


def test_a_reference_is_the_pipelines_30_s_selection_encoded_to_its_mean(
    ace15_low_rate_release: Path,  # noqa: F811
    songs: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from diffusers import AceStepPipeline

    side = TimbreSide(ace15_low_rate_release)
    vae = side.vae()
    audio = torch.from_numpy(sf.read(songs[1], dtype="float32")[0].T.copy())  # 7 s: repeated to 30 s
    ours = reference_latents(audio, vae)
    assert ours.shape == (1, 750, 8)  # 30 s at 25 frames/s, channels last
    monkeypatch.setattr(
        OobleckDiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode()
    )
    shim = type("Shim", (), {"sample_rate": RATE, "vae": vae.autoencoder})()
    with torch.no_grad():
        ref, order = AceStepPipeline.prepare_reference_audio_latents(
            shim, audio, 1, torch.device("cpu"), torch.float32
        )
    assert torch.equal(order, torch.tensor([0]))
    assert torch.equal(ours, ref)


def test_song_timbre_cached_equals_online_and_is_read_back_without_the_vae(
    ace15_low_rate_release: Path,  # noqa: F811
    songs: list[Path],
    tmp_path: Path,
    vae_encodes: list[int],  # noqa: F811
) -> None:
    batch = song_batch(songs)
    cached = load_ace15(ace15_low_rate_release, repa_layer=2, dataset_path=tmp_path, timbre="song").eval()
    first = cached.conditioning_from_batch(batch)  # computes both songs and writes them
    assert len(vae_encodes) == 2
    files = sorted(timbre_cache_dir(tmp_path).rglob("*.safetensors"))
    assert [f.stem for f in files] == ["hash0", "hash1"]
    again = cached.conditioning_from_batch(batch)
    assert len(vae_encodes) == 2  # read back: no VAE forward
    online = load_ace15(ace15_low_rate_release, repa_layer=2, timbre="song").eval()  # no cache at all
    computed = online.conditioning_from_batch(batch)
    assert len(vae_encodes) == 4
    assert first.timbre is not None and first.timbre.shape == (2, 750, 8)
    assert torch.equal(first.timbre, again.timbre) and torch.equal(first.timbre, computed.timbre)
    assert not torch.equal(first.timbre[0], first.timbre[1])  # each song its own reference
    with torch.no_grad():
        assert torch.equal(cached.encode_condition(again), online.encode_condition(computed))


def test_song_timbre_changes_the_condition_and_silence_stays_the_default(
    ace15_low_rate_release: Path,  # noqa: F811
    songs: list[Path],
    tmp_path: Path,
) -> None:
    batch = song_batch(songs)
    silent = load_ace15(ace15_low_rate_release, repa_layer=2).eval()
    assert silent.timbre_side is None and silent.conditioning_from_batch(batch).timbre is None
    song = load_ace15(ace15_low_rate_release, repa_layer=2, dataset_path=tmp_path, timbre="song").eval()
    with torch.no_grad():
        quiet = silent.encode_condition(silent.conditioning_from_batch(batch))
        own = song.encode_condition(song.conditioning_from_batch(batch))
    assert quiet.shape == own.shape and (quiet - own).abs().max().item() > 1e-3


def test_song_timbre_trains_the_timbre_encoder(
    ace15_low_rate_release: Path,  # noqa: F811
    songs: list[Path],
    tmp_path: Path,
) -> None:
    model: AceStep15 = load_ace15(ace15_low_rate_release, repa_layer=2, dataset_path=tmp_path, timbre="song")
    cond = model.conditioning_from_batch(song_batch(songs))
    x = torch.randn(2, 8, 12)
    model(x, torch.tensor([0.5, 0.7]), cond).velocity.square().mean().backward()
    grad = model.condition_encoder.timbre_encoder.embed_tokens.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_a_batch_without_its_songs_and_an_unknown_mode_are_one_line_errors(
    ace15_low_rate_release: Path,  # noqa: F811
) -> None:
    model = load_ace15(ace15_low_rate_release, repa_layer=2, timbre="song")
    batch = {"frame_mask": torch.ones(1, 4, dtype=torch.bool), "prompts": ["x"], "lyrics_text": [""]}
    with pytest.raises(RefrainInputError, match="does not name its songs") as err:
        model.conditioning_from_batch(batch)
    assert "\n" not in str(err.value)
    with pytest.raises(RefrainInputError, match="model.dit.timbre"):
        load_ace15(ace15_low_rate_release, timbre="voice")


@pytest.mark.slow  # samples three songs end to end (~2 s on the shared machine)
def test_timbre_audio_songs_record_the_file_and_regenerate_bit_exact(
    ace15_low_rate_release: Path,  # noqa: F811
    songs: list[Path],
    tmp_path: Path,
) -> None:
    from refrain.sampling.options import SamplerOptions
    from refrain.sampling.pipeline import Pipeline

    pipe = Pipeline.from_release(ace15_low_rate_release)
    reference = tmp_path / "reference.wav"
    reference.write_bytes(songs[1].read_bytes())
    options = SamplerOptions(steps=2, guidance="none", seed=5)
    song = pipe.text2music("synth pop", "[verse]\nla la", 1.0, options=options, timbre_audio=reference)
    assert song.sidecar["params"]["timbre_audio"] == str(reference.resolve())
    assert song.sidecar["timbre_audio"]["sha256"]  # the file's identity, checked on regenerate
    assert torch.equal(pipe.regenerate(song.sidecar).latent, song.latent)
    reference.write_bytes(songs[0].read_bytes())
    with pytest.raises(RefrainInputError, match="changed since this song was made"):
        pipe.regenerate(song.sidecar)


@pytest.mark.slow
@pytest.mark.parametrize("guided", [False, True], ids=["no_guidance", "apg_7"])
def test_text2music_with_timbre_audio_is_the_reference_pipelines_song(
    ace15_release: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    guided: bool,
) -> None:
    """Same seed, same reference audio: refrain-infer's song is ``AceStepPipeline(reference_audio=...)``'s.

    The pipeline draws the reference's VAE posterior from the global generator (no ``generator`` reaches it);
    refrain takes the posterior mean, so the pipeline's draw is pinned to its mean here.
    """
    from diffusers import AceStepPipeline
    from diffusers.utils import logging as diffusers_logging

    from refrain.sampling.options import SamplerOptions
    from refrain.sampling.pipeline import Pipeline

    noise = 0.3 * np.random.default_rng(3).standard_normal((4 * 48000, 2))
    audio = np.clip(noise, -0.99, 0.99).astype(np.float32)  # within full scale: loading clips nothing
    path = tmp_path / "reference.wav"
    sf.write(path, audio, 48000, subtype="FLOAT")
    pipe = Pipeline.from_release(ace15_release)
    defaults = dict(pipe.model.backbone_spec.sampler_defaults)
    if not guided:
        defaults.update(guidance="none", guidance_scale=1.0)
    options = SamplerOptions(**defaults, seed=7)
    prompt, lyrics = "synth pop, female vocals", "[verse]\nhello night\nwe sing"
    song = pipe.text2music(prompt, lyrics, 2.0, options=options, timbre_audio=path)
    diffusers_logging.set_verbosity_error()
    reference = AceStepPipeline.from_pretrained(ace15_release)
    reference.set_progress_bar_config(disable=True)
    monkeypatch.setattr(
        OobleckDiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode()
    )
    latents = reference(
        prompt=prompt,
        lyrics=lyrics,
        audio_duration=2.0,
        guidance_scale=7.0 if guided else 1.0,
        reference_audio=torch.from_numpy(audio.T.copy()),
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    ).audios
    diff = (song.latent.T[None] - latents).abs().max().item()
    print(
        f"timbre_audio vs AceStepPipeline(reference_audio=...), {'APG 7' if guided else 'no guidance'}: {diff:.3g}"
    )
    assert diff < 1e-5
    silent = pipe.text2music(prompt, lyrics, 2.0, options=options)
    assert (silent.latent.T[None] - latents).abs().max().item() > 1e-3  # the reference really mattered


@pytest.mark.slow
def test_refrain_infer_takes_timbre_audio_and_regenerates_it_bit_exact(
    ace15_low_rate_release: Path,  # noqa: F811
    songs: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from refrain.cli.infer import main

    out = tmp_path / "song.wav"
    argv = ["text2music", "--bundle", str(ace15_low_rate_release), "--prompt", "synth pop", "--duration", "1"]
    argv += [
        "--timbre_audio",
        str(songs[0]),
        "--seed",
        "3",
        "--steps",
        "3",
        "--out",
        str(out),
        "--no_progress",
    ]
    assert main(argv) in (0, None), capsys.readouterr().err[-2000:]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["params"]["timbre_audio"] == str(songs[0].resolve())
    assert main(["--from_sidecar", str(out.with_suffix(".json")), "--no_progress"]) in (0, None)
    assert np.array_equal(sf.read(out)[0], sf.read(tmp_path / "song.again.wav")[0])


def test_timbre_audio_on_a_backbone_without_a_timbre_input_is_one_line(
    tmp_path: Path, songs: list[Path]
) -> None:
    from helpers.bundles import make_tiny_bundle

    from refrain.sampling.pipeline import Pipeline

    pipe = Pipeline.from_bundle(make_tiny_bundle(tmp_path / "dit"))
    with pytest.raises(RefrainInputError, match="this backbone has no timbre input") as err:
        pipe.text2music("synth pop", "", 1.0, timbre_audio=songs[0])
    assert "\n" not in str(err.value) and str(err.value).startswith("--timbre_audio")
