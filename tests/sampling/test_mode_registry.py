"""Sampler modes are a registry: refrain-infer's sub-commands, Pipeline.run/pipe.<mode>() and sidecar
regeneration all read it, so a new mode is one registered function."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.bundles import make_tiny_bundle

from refrain.cli.infer import build_parser, main
from refrain.errors import RefrainInputError
from refrain.sampling.engine import SamplingEngine
from refrain.sampling.modes import (
    ModeCall,
    base,
    get_mode,
    lyrics_flags,
    mode_names,
    prompt_and_lyrics,
    register_mode,
)
from refrain.sampling.options import SamplerOptions
from refrain.sampling.pipeline import Pipeline
from refrain.sampling.solvers import sample
from refrain.sampling.song import SongResult

FAST = SamplerOptions(steps=3, guidance="cfg", guidance_scale=3.0, guidance_interval=1.0, seed=5)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def song_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    t = np.arange(22050) / 44100.0
    audio = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    path = tmp_path_factory.mktemp("source") / "song.wav"
    sf.write(path, audio.T, 44100)
    return path


@pytest.fixture()
def reversed_mode(monkeypatch: pytest.MonkeyPatch) -> str:
    """A mode defined in the test: noise time-reversed, then sampled (a registry entry, nothing else)."""
    monkeypatch.setattr(base, "_MODES", dict(base._MODES))

    def flags(parser: argparse.ArgumentParser) -> None:
        lyrics_flags(parser)
        parser.add_argument("--flip", action="store_true")

    @register_mode(
        "reversed",
        "sample from time-reversed noise",
        add_flags=flags,
        flag_params=lambda args: {**prompt_and_lyrics(args), "flip": args.flip},
    )
    def reversed_take(
        engine: SamplingEngine, source: Any, prompt: str = "", lyrics: str = "", flip: bool = True, **kw: Any
    ) -> SongResult:
        call = ModeCall(engine, "reversed", kw.get("options"), kw.get("layout"), source)
        timed = call.lyrics(lyrics, call.song_seconds)
        noise, generator = call.noise(call.song.frames)
        noise = noise.flip(-1) if flip else noise
        velocity = call.velocity(prompt, timed, call.song.frames)
        latent = sample(velocity, noise, call.options.sigmas(), call.options.solver, generator=generator)
        audio = engine.decode(latent, call.song.audio.shape[-1])
        return call.result(latent, audio, timed, prompt=prompt, lyrics=lyrics, flip=flip)

    return "reversed"


def _subcommands() -> tuple[str, ...]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return tuple(action.choices)


def test_cli_sub_commands_are_the_registered_modes() -> None:
    assert _subcommands() == mode_names()
    builtin = {"text2music", "retake", "repaint", "extend", "edit", "audio2audio", "stem", "accompany"}
    assert builtin <= set(mode_names())
    assert not get_mode("retake").sampler and not get_mode("text2music").source and get_mode("edit").source


def test_a_registered_mode_runs_regenerates_and_has_a_sub_command(
    reversed_mode: str, bundle: Path, song_file: Path, tmp_path: Path
) -> None:
    pipe = Pipeline.from_bundle(bundle)
    song = pipe.run(reversed_mode, song_file, "synth", options=FAST)
    same = pipe.reversed(song_file, "synth", options=FAST)
    assert song.sidecar["mode"] == "reversed" and song.sidecar["params"]["flip"] is True
    assert song.sidecar["params"]["source"]["sha256"] and torch.equal(same.latent, song.latent)
    assert torch.equal(pipe.regenerate(song.sidecar).latent, song.latent)
    unflipped = pipe.reversed(song_file, "synth", flip=False, options=FAST)
    assert not torch.equal(unflipped.latent, song.latent)
    assert "reversed" in _subcommands()
    out = tmp_path / "r.flac"
    argv = [
        "reversed",
        "--bundle",
        str(bundle),
        "--source",
        str(song_file),
        "--prompt",
        "synth",
        "--flip",
        "--steps",
        "3",
        "--seed",
        "5",
        "--guidance",
        "cfg",
        "--out",
        str(out),
        "--no_progress",
    ]
    assert main(argv) == 0 and sf.info(out).frames == 22050
    assert json.loads(out.with_suffix(".json").read_text())["params"]["flip"] is True


def test_unknown_modes_and_double_registration(reversed_mode: str, bundle: Path) -> None:
    pipe = Pipeline.from_bundle(bundle)
    with pytest.raises(RefrainInputError, match="unknown sampler mode 'karaoke'"):
        pipe.run("karaoke")
    with pytest.raises(AttributeError, match="karaoke"):
        pipe.karaoke  # noqa: B018
    with pytest.raises(ValueError, match="registered twice"):
        register_mode("reversed", "again")(lambda engine: None)  # type: ignore[arg-type,return-value]
