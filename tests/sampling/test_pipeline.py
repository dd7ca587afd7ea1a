"""Pipeline on a tiny exported bundle: text2music, batches, retake, seeds and regeneration from sidecars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.bundles import make_tiny_bundle

from refrain.errors import RefrainInputError
from refrain.sampling.options import SamplerOptions
from refrain.sampling.pipeline import Pipeline
from refrain.sampling.sidecar import read_sidecar

FAST = SamplerOptions(steps=4, guidance="cfg", guidance_scale=3.0, guidance_interval=1.0, seed=7)
LRC = "[00:00.10]hello night\n[00:00.60]city lights"
TAGGED = "[verse]\nhello night\nwe are singing all the way home\n\n[chorus]\nrun to the river"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return Pipeline.from_bundle(make_tiny_bundle(tmp_path_factory.mktemp("pipe")))


def test_text2music_shape_and_sidecar(pipe: Pipeline) -> None:
    song = pipe.text2music("upbeat synth pop", LRC, 1.5, options=FAST)
    assert song.audio.dtype == np.float32 and song.audio.shape == (2, round(1.5 * 44100))
    assert np.isfinite(song.audio).all() and np.abs(song.audio).max() > 0
    assert song.latent.shape == (16, math.ceil(1.5 * 44100 / 1024))
    car = song.sidecar
    assert car["mode"] == "text2music" and car["bundle"]["hash"] == pipe.bundle_hash
    assert car["params"]["prompt"] == "upbeat synth pop" and car["params"]["seed"] == 7
    assert car["options"] == FAST.to_dict()
    assert car["lyrics_source"] == "lrc" and [line["time"] for line in car["lyrics_timing"]] == [0.1, 0.6]
    json.dumps(car)  # plain JSON all the way down


def test_same_seed_same_bits_other_seed_other_song(pipe: Pipeline) -> None:
    first = pipe.text2music("calm piano", TAGGED, 1.0, options=FAST)
    second = pipe.text2music("calm piano", TAGGED, 1.0, options=FAST)
    other = pipe.text2music(
        "calm piano", TAGGED, 1.0, options=SamplerOptions(**{**FAST.to_dict(), "seed": 8})
    )
    assert np.array_equal(first.audio, second.audio) and torch.equal(first.latent, second.latent)
    assert not np.allclose(first.audio, other.audio)


def test_regenerate_from_saved_sidecar_is_bit_exact(pipe: Pipeline, tmp_path: Path) -> None:
    song = pipe.text2music("dark techno", TAGGED, 1.0, layout={"bpm": 140.0}, options=FAST)
    path = song.save(tmp_path / "song.flac")
    sidecar = read_sidecar(tmp_path / "song.json")
    assert sidecar["output"]["path"] == str(path.resolve()) and sidecar["params"]["bpm"] == 140.0
    again = pipe.regenerate(tmp_path / "song.json")
    assert np.array_equal(again.audio, song.audio)
    again.save(tmp_path / "again.flac")
    assert np.array_equal(sf.read(tmp_path / "again.flac")[0], sf.read(path)[0])


def test_random_seed_is_recorded(pipe: Pipeline) -> None:
    song = pipe.text2music("folk", "", 0.5, options=SamplerOptions(steps=2, guidance="none"))
    seed = song.sidecar["params"]["seed"]
    assert isinstance(seed, int) and song.sidecar["options"]["seed"] == seed
    assert np.array_equal(pipe.regenerate(song.sidecar).audio, song.audio)


def test_batch_of_prompts(pipe: Pipeline) -> None:
    requests = [
        {"prompt": "rock", "lyrics": LRC, "duration": 1.0},
        {"prompt": "jazz", "lyrics": TAGGED, "duration": 0.6, "bpm": 90.0},
        {"prompt": "ambient", "duration": 0.8, "seed": 123},
    ]
    songs = pipe.text2music_batch(requests, FAST)
    assert [s.audio.shape[-1] for s in songs] == [44100, round(0.6 * 44100), round(0.8 * 44100)]
    assert [s.sidecar["params"]["seed"] for s in songs] == [7, 8, 123]
    assert songs[1].sidecar["batch"]["index"] == 1 and len(songs[1].sidecar["batch"]["requests"]) == 3
    assert songs[2].sidecar["lyrics_source"] == "none"
    again = pipe.regenerate(songs[1].sidecar)
    assert np.array_equal(again.audio, songs[1].audio)
    # a song sampled alone with the batch's seed starts from the same noise: close, not required to be equal
    alone = pipe.text2music(
        "jazz", TAGGED, 0.6, layout={"bpm": 90.0}, options=SamplerOptions(**{**FAST.to_dict(), "seed": 8})
    )
    assert np.allclose(alone.latent.numpy(), songs[1].latent.numpy(), atol=1e-3)


def test_retake_variance_zero_is_the_original(pipe: Pipeline) -> None:
    original = pipe.text2music("lofi", TAGGED, 1.0, options=FAST)
    same = pipe.retake(original.sidecar, variance=0.0, seed=99)
    assert np.array_equal(same.audio, original.audio)
    varied = pipe.retake(original.sidecar, variance=0.5, seed=99)
    far = pipe.retake(original.sidecar, variance=1.0, seed=99)
    near_gap = np.abs(varied.latent - original.latent).mean()
    assert 0 < near_gap < np.abs(far.latent - original.latent).mean()
    assert varied.sidecar["mode"] == "retake" and varied.sidecar["params"]["variance"] == 0.5
    assert np.array_equal(pipe.regenerate(varied.sidecar).audio, varied.audio)


def test_retake_of_a_batched_song(pipe: Pipeline) -> None:
    songs = pipe.text2music_batch([{"prompt": "a", "duration": 0.5}, {"prompt": "b", "duration": 0.7}], FAST)
    same = pipe.retake(songs[1].sidecar, variance=0.0, seed=5)
    assert np.array_equal(same.audio, songs[1].audio)


@pytest.mark.parametrize(
    ("solver", "guidance", "lyrics_scale"),
    [
        ("euler", "apg", None),
        ("heun", "cfg_zero_star", 2.0),
        ("pingpong", "cfg", 4.0),
        ("heun", "none", None),
    ],
)
def test_every_solver_and_guidance(
    pipe: Pipeline, solver: str, guidance: str, lyrics_scale: float | None
) -> None:
    options = SamplerOptions(
        steps=3,
        solver=solver,
        guidance=guidance,
        lyrics_guidance_scale=lyrics_scale,
        guidance_decay="linear",
        seed=3,
    )
    song = pipe.text2music("pop", LRC, 0.5, options=options)
    assert np.isfinite(song.audio).all()
    assert np.array_equal(pipe.regenerate(song.sidecar).audio, song.audio)


def test_guidance_changes_the_result(pipe: Pipeline) -> None:
    plain = pipe.text2music("pop", LRC, 0.5, options=SamplerOptions(**{**FAST.to_dict(), "guidance": "none"}))
    guided = pipe.text2music(
        "pop", LRC, 0.5, options=SamplerOptions(**{**FAST.to_dict(), "guidance_scale": 6.0})
    )
    assert not torch.allclose(plain.latent, guided.latent)


def test_regenerate_refuses_another_bundle(pipe: Pipeline) -> None:
    song = pipe.text2music("pop", "", 0.3, options=FAST)
    song.sidecar["bundle"]["hash"] = "0" * 64
    with pytest.raises(RefrainInputError, match="made with bundle 000000000000"):
        pipe.regenerate(song.sidecar)
    assert np.array_equal(pipe.regenerate(song.sidecar, allow_other_bundle=True).audio, song.audio)


def test_bad_requests_get_one_line_errors(pipe: Pipeline, tmp_path: Path) -> None:
    with pytest.raises(RefrainInputError, match="duration"):
        pipe.text2music("pop", "", 0.0, options=FAST)
    with pytest.raises(RefrainInputError, match="unknown key"):
        pipe.text2music_batch([{"prompt": "x", "tempo": 3}], FAST)
    # one malformed LRC line: dropped with a note, as preparation does (it used to refuse the song)
    song = pipe.text2music("pop", "[00:01.00]ok\n[00:99:99]bad\n[00:02.00]fine", 3.0, options=FAST)
    assert [line["text"] for line in song.sidecar["lyrics_timing"]] == ["ok", "fine"]
    assert "1 line(s) dropped as malformed LRC, first at line 2" in song.sidecar["lyrics_notes"][0]
    with pytest.raises(RefrainInputError, match="cannot write"):
        pipe.text2music("pop", "", 0.3, options=FAST).save(tmp_path / "song.mp3")
    with pytest.raises(RefrainInputError, match="text2music"):
        pipe.retake(
            {"format": "refrain.sidecar", "version": 1, "mode": "repaint", "params": {}, "options": {}}
        )
