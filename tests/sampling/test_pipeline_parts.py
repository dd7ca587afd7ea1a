"""The pipeline's small parts: lyrics layout and grid, waveform splices, sidecar files, sampler options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from refrain.errors import RefrainInputError
from refrain.sampling.guidance import APG, CFG, CFGZeroStar
from refrain.sampling.lyrics_prep import LyricsPreparer, timed_lines
from refrain.sampling.options import SamplerOptions
from refrain.sampling.prompts_file import read_prompts
from refrain.sampling.sidecar import file_identity, new_sidecar, read_sidecar, resolve_identity, write_sidecar
from refrain.sampling.song import LyricsLayout, SongRequest
from refrain.sampling.splice import splice_extend, splice_repaint
from refrain.text.vocab import PhonemeVocab

TAGGED = "[verse]\nhello night\nwe are singing all the way home\n\n[chorus]\nrun to the river"


# ----- lyrics -----
def test_lrc_keeps_its_times_and_structured_lyrics_follow_the_tempo() -> None:
    lines, source = timed_lines("[00:01.50]first\n[00:00.50]zero", 10.0)
    assert source == "lrc" and [(line.time, line.text) for line in lines] == [(0.5, "zero"), (1.5, "first")]
    slow, source = timed_lines(TAGGED, 60.0, bpm=60.0)
    fast, _ = timed_lines(TAGGED, 60.0, bpm=120.0)
    assert source == "estimated"
    assert [line.text for line in slow] == [
        "hello night",
        "we are singing all the way home",
        "run to the river",
    ]
    assert slow[-1].time == pytest.approx(2 * fast[-1].time)
    assert timed_lines("  \n", 10.0) == ([], "none")


def test_lyrics_that_do_not_fit_are_squeezed_into_the_duration() -> None:
    natural, _ = timed_lines(TAGGED, 60.0, bpm=60.0)
    squeezed, _ = timed_lines(TAGGED, 5.0, bpm=60.0)
    assert natural[-1].time > 5.0 and squeezed[-1].time < 5.0
    started, _ = timed_lines(TAGGED, 60.0, bpm=60.0, start=3.0)
    assert started[0].time == pytest.approx(natural[0].time + 3.0)
    with pytest.raises(RefrainInputError, match="lyrics_format"):
        timed_lines(TAGGED, 5.0, lyrics_format="midi")


def test_prepared_lyrics_use_a_frozen_vocabulary() -> None:
    vocab = PhonemeVocab(["h", "ə", "l", "oʊ"])
    before = len(vocab)
    timed = LyricsPreparer(vocab).prepare("[00:00.00]hello\n[00:02.00]zebra", 4.0, language="en")
    assert len(vocab) == before  # never grows at inference
    assert timed.phoneme_ids[0] == [4, 5, 6, 7, PhonemeVocab.SENTENCE_END_ID]
    assert (
        timed.phoneme_ids[1] == [1, 1, 1, 1, 5, 2] and timed.unknown_phonemes == 4
    )  # z iː b ɹ unknown, ə known
    grid = timed.grid(40, 10.0)
    assert grid.shape == (40,) and grid[:5].tolist() == timed.phoneme_ids[0] and grid[20] > 0
    assert int((grid > 0).sum()) == len(timed.phoneme_ids[0]) + len(timed.phoneme_ids[1])
    assert timed.timing() == [{"time": 0.0, "text": "hello"}, {"time": 2.0, "text": "zebra"}]


def test_layout_and_request_validation() -> None:
    assert LyricsLayout.from_any({"bpm": 90}).bpm == 90
    assert SongRequest.from_any({"prompt": "x"}).layout == LyricsLayout()
    with pytest.raises(RefrainInputError, match="positive tempo"):
        LyricsLayout(bpm=0)
    with pytest.raises(RefrainInputError, match="unknown key"):
        LyricsLayout.from_any({"tempo": 90})


def test_prompts_file(tmp_path: Path) -> None:
    (tmp_path / "a.lrc").write_text("[00:01.00]hi")
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"prompt": "x", "name": "first"}\n\n{"prompt": "y", "lyrics_file": "a.lrc", "seed": 3}\n{"prompt": "z"}\n'
    )
    items = read_prompts(path, 100)
    assert [name for name, _ in items] == ["first", "001", "002"]
    assert [request["seed"] for _, request in items] == [100, 3, 102]
    assert items[1][1]["lyrics"] == "[00:01.00]hi" and "lyrics_file" not in items[1][1]
    for text, match in [
        ('{"prompt": "x"}\n{oops}\n', "p.jsonl:2: not JSON"),
        ("[1, 2]\n", "not a JSON object"),
        ("\n", "holds no prompts"),
        ('{"name": "a"}\n{"name": "a"}\n', "used twice"),
    ]:
        path.write_text(text)
        with pytest.raises(RefrainInputError, match=match):
            read_prompts(path, 0)


# ----- splices -----
def test_repaint_splice_is_exact_outside_the_span() -> None:
    rate = 100
    original = torch.rand(2, 300)
    generated = torch.rand(2, 320)  # decoded audio is a whole number of hops: longer
    out = splice_repaint(original, generated, 1.0, 2.0, rate, crossfade=0.1)
    assert out.shape == original.shape
    assert torch.equal(out[:, :100], original[:, :100]) and torch.equal(out[:, 200:], original[:, 200:])
    assert torch.equal(out[:, 110:190], generated[:, 110:190])
    ramp = out[:, 100:110]
    assert not torch.equal(ramp, original[:, 100:110]) and not torch.equal(ramp, generated[:, 100:110])


def test_extend_splice_places_the_song_between_the_new_parts() -> None:
    original, generated = torch.rand(2, 300), torch.rand(2, 600)
    out = splice_extend(original, generated, 100, 100, crossfade=0.1)
    assert torch.equal(out[:, :100], generated[:, :100]) and torch.equal(out[:, 400:], generated[:, 400:])
    assert torch.equal(out[:, 110:390], original[:, 10:290])
    with pytest.raises(RefrainInputError):
        splice_extend(original, generated, 400, 100, crossfade=0.1)


# ----- sidecar -----
def test_sidecar_round_trip_and_identity_checks(tmp_path: Path) -> None:
    source = tmp_path / "in.wav"
    source.write_bytes(b"RIFF-not-really")
    identity = file_identity(source)
    car = new_sidecar("repaint", {"source": identity, "start": 1.0}, SamplerOptions(seed=1).to_dict())
    path = write_sidecar(tmp_path / "song.json", car)
    assert read_sidecar(path) == json.loads(json.dumps(car))
    assert resolve_identity(identity, "source audio") == source.resolve()
    source.write_bytes(b"changed")
    with pytest.raises(RefrainInputError, match="sha256 differs"):
        resolve_identity(identity, "source audio")
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(RefrainInputError, match="not a refrain sidecar"):
        read_sidecar(tmp_path / "bad.json")
    (tmp_path / "new.json").write_text(json.dumps({**car, "version": 2}))
    with pytest.raises(RefrainInputError, match="sidecar version 2"):
        read_sidecar(tmp_path / "new.json")


# ----- options -----
def test_options_build_the_requested_guidance() -> None:
    assert SamplerOptions(guidance="none").make_guidance() is None
    assert isinstance(SamplerOptions(guidance="cfg").make_guidance(), CFG)
    apg = SamplerOptions(guidance="apg", apg_momentum=-0.5, apg_norm_threshold=1.0).make_guidance()
    assert isinstance(apg, APG) and (apg.momentum, apg.norm_threshold) == (-0.5, 1.0)
    assert isinstance(SamplerOptions(guidance="cfg_zero_star").make_guidance(), CFGZeroStar)
    sigmas = SamplerOptions(steps=5, shift=1.0).sigmas()
    assert len(sigmas) == 6 and sigmas[0] == 1.0 and sigmas[-1] == 0.0
    seeded = SamplerOptions().resolved()
    assert isinstance(seeded.seed, int) and seeded.resolved() is seeded
    assert SamplerOptions.from_dict(seeded.to_dict()) == seeded


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"solver": "rk4"}, "unknown solver"),
        ({"guidance": "pag"}, "unknown guidance"),
        ({"guidance_decay": "exp"}, "unknown decay"),
        ({"guidance_interval": 1.5}, "guidance_interval"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options_are_named(values: dict, match: str) -> None:
    with pytest.raises(RefrainInputError, match=match):
        SamplerOptions(**values)
    with pytest.raises(RefrainInputError, match="unknown sampler option"):
        SamplerOptions.from_dict({"stepz": 3})


def test_guided_velocity_uses_interval_and_lyrics_scale() -> None:
    class Model:
        calls: list[int] = []

        def __call__(self, x, sigma, cond):  # noqa: ANN001, ANN204
            self.calls.append(x.shape[0])
            return x

    class Cond:
        def with_dropped(self, **_: bool) -> Cond:
            return self

        @classmethod
        def cat(cls, items: list) -> Cond:
            return cls()

    model = Model()
    velocity = SamplerOptions(
        steps=4, guidance="cfg", lyrics_guidance_scale=2.0, guidance_interval=0.5
    ).guided(model, Cond())
    x = torch.ones(1, 2, 3)
    for step in range(4):
        velocity(x, torch.ones(1), step)
    assert model.calls == [1, 3, 3, 1]  # guided (3 passes) only in the middle half
    assert np.isclose(velocity.scale, 15.0) and velocity.lyrics_scale == 2.0
