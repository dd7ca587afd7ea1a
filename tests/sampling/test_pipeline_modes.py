"""Pipeline modes over a source song (generated or uploaded): repaint, extend, edit, audio2audio."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.bundles import make_tiny_bundle

from refrain.audio.io import load_audio, save_audio
from refrain.errors import RefrainInputError
from refrain.sampling.options import SamplerOptions
from refrain.sampling.pipeline import Pipeline

FAST = SamplerOptions(steps=4, guidance="cfg", guidance_scale=3.0, guidance_interval=1.0, seed=11)
RATE = 44100
LYRICS = "[00:00.10]hello night\n[00:00.80]city lights"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return Pipeline.from_bundle(make_tiny_bundle(tmp_path_factory.mktemp("modes")))


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.5 s stereo 'uploaded' song: two tones and a little noise, 24-bit WAV."""
    t = np.arange(round(1.5 * RATE)) / RATE
    rng = np.random.default_rng(0)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(t.size)
    path = tmp_path_factory.mktemp("upload") / "upload.wav"
    return save_audio(path, np.stack([left, right]).astype(np.float32), RATE)


@pytest.fixture(scope="module")
def generated(pipe: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    song = pipe.text2music("synth pop", LYRICS, 1.2, options=FAST)
    return song.save(tmp_path_factory.mktemp("generated") / "song.flac")


def _source(path: Path) -> np.ndarray:
    return load_audio(path, sample_rate=RATE).samples


@pytest.mark.parametrize("which", ["uploaded", "generated"])
def test_repaint_keeps_everything_outside_the_span(
    pipe: Pipeline, which: str, request: pytest.FixtureRequest
) -> None:
    path = request.getfixturevalue(which)
    original = _source(path)
    song = pipe.repaint(path, 0.4, 0.8, "dark ambient", LYRICS, crossfade=0.05, options=FAST)
    start, end = round(0.4 * RATE), round(0.8 * RATE)
    assert song.audio.shape == original.shape
    assert np.array_equal(song.audio[:, :start], original[:, :start])
    assert np.array_equal(song.audio[:, end:], original[:, end:])
    fade = round(0.05 * RATE)
    middle = slice(start + fade, end - fade)
    assert not np.allclose(song.audio[:, middle], original[:, middle], atol=1e-3)
    car = song.sidecar
    assert car["mode"] == "repaint" and car["params"]["source"]["path"] == str(path.resolve())
    assert len(car["params"]["source"]["sha256"]) == 64
    assert np.array_equal(pipe.regenerate(car).audio, song.audio)


def test_repaint_variance_controls_how_far_it_moves(pipe: Pipeline, uploaded: Path) -> None:
    source_latent = pipe.encode(torch.from_numpy(_source(uploaded)))[0]
    frames = slice(round(0.4 * pipe.frame_rate) + 1, round(1.0 * pipe.frame_rate) - 1)
    gaps = []
    for variance in (0.25, 1.0):
        song = pipe.repaint(uploaded, 0.4, 1.0, "jazz", variance=variance, options=FAST)
        gaps.append(float((song.latent[:, frames] - source_latent[:, frames]).abs().mean()))
    assert 0 < gaps[0] < gaps[1]


def test_regenerating_from_a_changed_source_is_refused(
    pipe: Pipeline, uploaded: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copy(uploaded, tmp_path / "copy.wav"))
    song = pipe.repaint(copy, 0.2, 0.5, "rock", options=FAST)
    save_audio(copy, _source(copy) * 0.5, RATE)
    with pytest.raises(RefrainInputError, match="changed since this song was made"):
        pipe.regenerate(song.sidecar)


def test_extend_left_and_right(pipe: Pipeline, uploaded: Path) -> None:
    original = _source(uploaded)
    song = pipe.extend(
        uploaded,
        left=0.5,
        right=1.0,
        prompt="house",
        lyrics="[verse]\nhello night",
        crossfade=0.05,
        options=FAST,
    )
    hop = pipe.vae.hop_length
    left = round(0.5 * pipe.frame_rate) * hop
    frames = (
        round(0.5 * pipe.frame_rate)
        + pipe.encode(torch.from_numpy(original)).shape[-1]
        + round(1.0 * pipe.frame_rate)
    )
    assert song.audio.shape == (2, frames * hop)
    fade = round(0.05 * RATE)
    kept = slice(left + fade, left + original.shape[-1] - fade)
    assert np.array_equal(song.audio[:, kept], original[:, fade:-fade])
    assert np.abs(song.audio[:, : left - 1]).max() > 0  # new audio before the song
    assert song.sidecar["num_frames"] == frames
    assert np.array_equal(pipe.regenerate(song.sidecar).audio, song.audio)


def test_extend_needs_some_seconds(pipe: Pipeline, uploaded: Path) -> None:
    with pytest.raises(RefrainInputError, match="add a positive number of seconds"):
        pipe.extend(uploaded, options=FAST)


@pytest.mark.parametrize("preset", ["only_lyrics", "remix"])
def test_edit_presets(pipe: Pipeline, generated: Path, preset: str) -> None:
    song = pipe.edit(
        generated,
        "synth pop",
        LYRICS,
        target_lyrics="[00:00.10]goodbye day\n[00:00.80]country roads",
        preset=preset,
        options=FAST,
    )
    source_latent = pipe.encode(torch.from_numpy(_source(generated)))[0]
    assert song.audio.shape == _source(generated).shape and np.isfinite(song.audio).all()
    assert not torch.allclose(song.latent, source_latent)
    params = song.sidecar["params"]
    assert params["preset"] == preset and params["target_prompt"] == "synth pop"
    expected = {"only_lyrics": (0.6, 1.0), "remix": (0.2, 0.4)}[preset]
    assert (params["n_min"], params["n_max"]) == expected
    assert song.sidecar["lyrics_timing"][0]["text"] == "goodbye day"
    assert np.array_equal(pipe.regenerate(song.sidecar).audio, song.audio)


def test_edit_with_unchanged_prompt_keeps_the_source(pipe: Pipeline, generated: Path) -> None:
    """Identical source and target conditioning: FlowEdit's velocity difference is zero everywhere."""
    song = pipe.edit(generated, "synth pop", LYRICS, n_min=0.0, n_max=1.0, options=FAST)
    assert torch.equal(song.latent, pipe.encode(torch.from_numpy(_source(generated)))[0])
    with pytest.raises(RefrainInputError, match="unknown preset"):
        pipe.edit(generated, preset="karaoke", options=FAST)


def test_audio2audio_strength(pipe: Pipeline, uploaded: Path) -> None:
    source_latent = pipe.encode(torch.from_numpy(_source(uploaded)))[0]
    kept = pipe.audio2audio(uploaded, 1.0, "pop", options=FAST)
    assert torch.equal(kept.latent, source_latent)
    gaps = [
        float(
            (pipe.audio2audio(uploaded, s, "pop", LYRICS, options=FAST).latent - source_latent).abs().mean()
        )
        for s in (0.8, 0.2)
    ]
    assert 0 < gaps[0] < gaps[1]
    song = pipe.audio2audio(uploaded, 0.5, "pop", LYRICS, options=FAST)
    assert song.audio.shape == _source(uploaded).shape
    assert np.array_equal(pipe.regenerate(song.sidecar).audio, song.audio)


def test_in_memory_source_is_recorded_but_not_regenerable(pipe: Pipeline, uploaded: Path) -> None:
    song = pipe.audio2audio(_source(uploaded), 0.5, "pop", options=FAST)
    assert song.sidecar["params"]["source"]["path"] is None
    with pytest.raises(RefrainInputError, match="in-memory array"):
        pipe.regenerate(song.sidecar)
    with pytest.raises(RefrainInputError, match="array shaped"):
        pipe.audio2audio(np.zeros(100, dtype=np.float32), options=FAST)
