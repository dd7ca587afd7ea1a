"""`refrain-infer`: every mode as a sub-command on a tiny bundle, prompts files, sidecar regeneration, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.bundles import make_tiny_bundle

from refrain.cli.infer import build_parser, main  # noqa: E402

FAST = ["--steps", "3", "--guidance", "cfg", "--guidance_scale", "3", "--no_progress"]
LRC = "[00:00.10]hello night\n[00:00.60]city lights\n"


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny convolutions: one intra-op thread avoids OpenMP spin-waits on a shared CPU (10x here)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def song(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text2music song made through the CLI, with an LRC lyrics file."""
    folder = tmp_path_factory.mktemp("song")
    (folder / "song.lrc").write_text(LRC)
    out = folder / "song.flac"
    code = main(
        [
            "text2music",
            "--bundle",
            str(bundle),
            "--prompt",
            "synth pop",
            "--lyrics_file",
            str(folder / "song.lrc"),
            "--duration",
            "1.0",
            "--seed",
            "5",
            "--out",
            str(out),
            "--spectrogram",
            *FAST,
        ]
    )
    assert code == 0
    return out


def _read(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32")[0]


def _sidecar(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_text2music_writes_song_sidecar_and_spectrogram(song: Path, bundle: Path) -> None:
    audio, rate = sf.read(song)
    assert rate == 44100 and audio.shape == (44100, 2)
    car = _sidecar(song)
    assert car["mode"] == "text2music" and car["params"]["seed"] == 5 and car["options"]["steps"] == 3
    assert car["params"]["lyrics"] == LRC and car["lyrics_source"] == "lrc"
    assert car["bundle"]["path"] == str(bundle.resolve())
    assert song.with_suffix(".png").stat().st_size > 0


def test_from_sidecar_regenerates_bit_exact(
    song: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "again.flac"
    assert main(["--from_sidecar", str(song.with_suffix(".json")), "--out", str(out), "--no_progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert np.array_equal(_read(out), _read(song))


def test_prompts_file_in_batches(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "b.lrc").write_text(LRC)
    lines = [
        {"prompt": "rock", "duration": 0.5, "name": "rock"},
        {"prompt": "jazz", "lyrics_file": "b.lrc", "duration": 0.7},
        {"prompt": "folk", "lyrics": "[verse]\nhello night", "seed": 42},
    ]
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    code = main(
        [
            "text2music",
            "--bundle",
            str(bundle),
            "--prompts_file",
            str(tmp_path / "prompts.jsonl"),
            "--duration",
            "0.4",
            "--out_dir",
            str(tmp_path / "songs"),
            "--batch_size",
            "2",
            "--format",
            "wav",
            "--seed",
            "10",
            *FAST,
        ]
    )
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "songs").glob("*.wav"))
    assert files == ["001.wav", "002.wav", "rock.wav"]
    cars = {name: _sidecar(tmp_path / "songs" / name) for name in files}
    assert [cars[n]["params"]["seed"] for n in ("rock.wav", "001.wav", "002.wav")] == [10, 11, 42]
    assert cars["001.wav"]["params"]["lyrics"] == LRC and cars["002.wav"]["params"]["duration"] == 0.4
    assert (
        cars["001.wav"]["batch"]["index"] == 1 and "batch" not in cars["002.wav"]
    )  # the last batch has one song
    again = tmp_path / "again.wav"
    assert (
        main(["--from_sidecar", str(tmp_path / "songs" / "001.json"), "--out", str(again), "--no_progress"])
        == 0
    )
    assert np.array_equal(_read(again), _read(tmp_path / "songs" / "001.wav"))


def test_retake_with_variance_zero_is_the_same_song(song: Path, bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "take.flac"
    args = [
        "retake",
        "--bundle",
        str(bundle),
        "--source_sidecar",
        str(song.with_suffix(".json")),
        "--no_progress",
    ]
    assert main([*args, "--variance", "0", "--seed", "3", "--out", str(out)]) == 0
    assert np.array_equal(_read(out), _read(song))
    assert main([*args, "--variance", "0.6", "--out", str(tmp_path / "take2.flac")]) == 0
    assert not np.array_equal(_read(tmp_path / "take2.flac"), _read(song))
    assert _sidecar(tmp_path / "take2.flac")["params"]["variance"] == 0.6


def test_repaint_extend_edit_audio2audio(song: Path, bundle: Path, tmp_path: Path) -> None:
    base = ["--bundle", str(bundle), "--source", str(song), "--seed", "1", *FAST]
    original = _read(song)
    out = tmp_path / "repaint.flac"
    assert (
        main(["repaint", *base, "--start", "0.3", "--end", "0.6", "--prompt", "jazz", "--out", str(out)]) == 0
    )
    repainted = _read(out)
    assert np.array_equal(repainted[: round(0.3 * 44100)], original[: round(0.3 * 44100)])
    assert np.array_equal(repainted[round(0.6 * 44100) :], original[round(0.6 * 44100) :])
    out = tmp_path / "extend.wav"
    assert main(["extend", *base, "--right", "0.5", "--lyrics", "[verse]\nmore", "--out", str(out)]) == 0
    assert _read(out).shape[0] > original.shape[0] + 0.45 * 44100
    out = tmp_path / "edit.flac"
    edit = [
        "edit",
        *base,
        "--source_prompt",
        "synth pop",
        "--source_lyrics",
        LRC,
        "--target_lyrics",
        "[00:00.10]goodbye day",
    ]
    assert main([*edit, "--preset", "remix", "--out", str(out)]) == 0
    params = _sidecar(out)["params"]
    assert params["preset"] == "remix" and params["target_lyrics"] == "[00:00.10]goodbye day"
    assert params["target_prompt"] == "synth pop"
    out = tmp_path / "a2a.flac"
    assert main(["audio2audio", *base, "--strength", "0.7", "--prompt", "lofi", "--out", str(out)]) == 0
    assert _sidecar(out)["params"]["strength"] == 0.7 and _read(out).shape == original.shape
    again = tmp_path / "a2a_again.flac"
    assert main(["--from_sidecar", str(out.with_suffix(".json")), "--out", str(again), "--no_progress"]) == 0
    assert np.array_equal(_read(again), _read(out))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x.mp3"], "x.mp3: cannot write '.mp3' songs"),
        (["--lyrics", "a", "--lyrics_file", "a.lrc"], "given both as text and as a file"),
        (["--guidance_interval", "2"], "guidance_interval: must be in [0, 1]"),
        (["--bpm", "0"], "positive tempo"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    args = [
        "text2music",
        "--bundle",
        str(bundle),
        "--duration",
        "0.3",
        "--out",
        str(tmp_path / "s.flac"),
        *FAST,
    ]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_missing_bundle_and_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["text2music", "--bundle", str(tmp_path), "--no_progress"]) == 2
    assert "manifest.json missing" in capsys.readouterr().err
    assert main(["--from_sidecar", str(tmp_path / "none.json")]) == 2
    assert "sidecar not found" in capsys.readouterr().err


def test_help_lists_every_mode() -> None:
    text = build_parser().format_help()
    for mode in ("text2music", "retake", "repaint", "extend", "edit", "audio2audio", "--from_sidecar"):
        assert mode in text
