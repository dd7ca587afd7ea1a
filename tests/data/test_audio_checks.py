"""inspect_audio streams the file (bounded memory), skips too long, out-of-range and internally damaged audio."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.audio import mp3_bytes, tone

from refrain.audio import io as audio_io
from refrain.audio.io import load_audio
from refrain.audio.mp3 import Mp3Setting, encode_mp3
from refrain.cli.prepare import build_parser
from refrain.data.audio_checks import inspect_audio
from refrain.data.mp3_check import scan_mp3
from refrain.data.prepare import PrepareOptions, prepare_dataset


def _codes(issues: list) -> list[str]:
    return [issue.code for issue in issues]


def _peak_bytes(call) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_inspection_memory_is_bounded_by_the_block_not_the_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, tone(20.0, channels=2), 48_000, subtype="FLOAT")  # 7.7 MB of samples
    size = path.stat().st_size
    monkeypatch.setattr(audio_io, "BLOCK_FRAMES", 4096, raising=False)
    facts = None

    def run() -> None:
        nonlocal facts
        facts, _ = inspect_audio(path, 1.0)

    peak = _peak_bytes(run)
    assert facts is not None and facts.frames == 960_000
    assert peak < size / 20, f"inspection held {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


def test_a_whole_file_resampled_load_holds_little_beyond_its_output(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "song.wav"
    sf.write(path, tone(10.0, sample_rate=44_100, channels=2), 44_100, subtype="FLOAT")
    monkeypatch.setattr(audio_io, "BLOCK_FRAMES", 4096, raising=False)
    out = {}
    peak = _peak_bytes(lambda: out.setdefault("x", load_audio(path, sample_rate=48_000)))
    samples = out["x"].samples
    assert samples.shape == (2, 480_000)
    assert peak < 1.2 * samples.nbytes  # decoding, folding and resampling all happen block by block
    whole = load_audio(path, sample_rate=48_000, duration_seconds=10.0)
    np.testing.assert_array_equal(samples, whole.samples)


def test_files_longer_than_max_duration_are_skipped_before_decoding(tmp_path: Path, write_audio) -> None:
    path = write_audio(tmp_path / "long.wav", seconds=3.0)
    facts, issues = inspect_audio(path, 1.0, max_seconds=2.0)
    assert facts is None and _codes(issues) == ["too_long"]
    assert "3.0 s > 2 s; raise --max_duration" in issues[0].message
    assert inspect_audio(path, 1.0, max_seconds=None)[0] is not None
    assert build_parser().parse_args(["--output", "x"]).max_duration == 1200.0


def test_prepare_reports_too_long_files(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    write_audio(music / "short.wav", seconds=1.5)
    write_audio(music / "long.wav", seconds=4.0, freq=300)
    options = PrepareOptions(output_dir=tmp_path / "out", input_dir=music, max_duration=3.0, progress=False)
    result = prepare_dataset(options)
    assert result.report["skipped_by_reason"] == {"too_long": 1}
    assert result.report["skipped"][0]["file"].endswith("long.wav")


def test_float_audio_far_beyond_full_scale_is_skipped_as_out_of_range(tmp_path: Path) -> None:
    quiet = tone(2.0)
    loud = quiet * (68.0 / np.abs(quiet).max())  # peak 68, nearly every sample beyond full scale
    path = tmp_path / "hot.wav"
    sf.write(path, loud, 48_000, subtype="FLOAT")
    facts, issues = inspect_audio(path, 1.0)
    assert facts is None and _codes(issues) == ["out_of_range"]
    assert "peak 68" in issues[0].message and "+36.7 dBFS" in issues[0].message


def test_a_few_overs_are_clipped_with_a_note_and_counted_at_load(tmp_path: Path) -> None:
    samples = tone(2.0)
    samples[1000:1010] = 1.25  # 20 of 192000 values, peak +1.9 dBFS
    path = tmp_path / "overs.wav"
    sf.write(path, samples, 48_000, subtype="FLOAT")
    facts, issues = inspect_audio(path, 1.0)
    assert facts is not None and _codes(issues) == ["clipped_at_load"]
    assert "20 of 192000 samples" in issues[0].message
    loaded = load_audio(path)
    assert loaded.clipped == 20 and float(loaded.samples.max()) == 1.0


@pytest.mark.parametrize("xing", [False, True])
def test_a_damaged_stretch_inside_an_mp3_is_skipped_not_spliced(tmp_path: Path, xing: bool) -> None:
    audio = tone(6.0)
    data = encode_mp3(audio.T, 48_000, Mp3Setting(bitrate_kbps=128)) if xing else mp3_bytes(audio)
    mid = len(data) // 2
    path = tmp_path / "damaged.mp3"
    path.write_bytes(data[:mid] + data[mid + 5000 :])  # 5000 bytes gone from the middle
    assert sf.info(str(path)).duration > 5.0  # the decoder alone splices and says nothing
    scan = scan_mp3(path)
    assert scan.corrupt and not scan.truncated and "more frames follow" in scan.detail
    facts, issues = inspect_audio(path, 1.0)
    assert facts is None and _codes(issues) == ["corrupt_stretch"]
    zeroed = tmp_path / "zeroed.mp3"
    zeroed.write_bytes(data[:mid] + bytes(3000) + data[mid + 3000 :])  # the decoder gives up here
    assert _codes(inspect_audio(zeroed, 1.0)[1]) == ["corrupt_stretch"]


def test_trailing_tags_after_the_last_frame_are_not_damage(tmp_path: Path) -> None:
    data = mp3_bytes(tone(2.0))
    path = tmp_path / "tagged.mp3"
    path.write_bytes(data + b"TAG" + bytes(125))  # ID3v1
    assert not scan_mp3(path).corrupt and not scan_mp3(path).truncated
    assert inspect_audio(path, 1.0)[0] is not None
