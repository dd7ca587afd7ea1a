"""Loading, crops, channel folds, bad input and atomic saving in refrain.audio.io."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from refrain.audio import io as audio_io
from refrain.audio.io import audio_info, downmix_matrix, load_audio, save_audio
from refrain.errors import RefrainInputError

from .signals import peak_hz, tone

SR = 48000
A = 1 / math.sqrt(2)

FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_24"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def _write(path: Path, frames_by_channels: np.ndarray, sr: int = SR, subtype: str = "FLOAT") -> Path:
    sf.write(path, frames_by_channels.T, sr, subtype=subtype)
    return path


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_each_format_loads_as_stereo_float32_with_channels_in_order(tmp_path: Path, ext: str) -> None:
    fmt, subtype = FORMATS[ext]
    path = tmp_path / f"song.{ext}"
    stereo = np.stack([tone(440, SR, 0.5), tone(1320, SR, 0.5)])
    sf.write(path, stereo.T, SR, format=fmt, subtype=subtype)
    info = audio_info(path)
    assert (info.format, info.subtype, info.channels, info.sample_rate) == (fmt, subtype, 2, SR)
    loaded = load_audio(path)
    assert loaded.samples.dtype == np.float32
    assert loaded.samples.shape == (2, 24000) == (2, info.frames)
    assert (loaded.original_channels, loaded.original_sample_rate, loaded.nonfinite_repaired) == (2, SR, 0)
    assert peak_hz(loaded.samples[0], SR) == pytest.approx(440, abs=4)
    assert peak_hz(loaded.samples[1], SR) == pytest.approx(1320, abs=4)


def test_mono_is_duplicated_to_stereo(tmp_path: Path) -> None:
    mono = tone(300, SR, 0.2)[None]
    loaded = load_audio(_write(tmp_path / "mono.wav", mono))
    assert loaded.samples.shape == (2, mono.shape[1]) and loaded.original_channels == 1
    np.testing.assert_array_equal(loaded.samples[0], mono[0])
    np.testing.assert_array_equal(loaded.samples[1], mono[0])
    assert load_audio(tmp_path / "mono.wav", channels=1).samples.shape == (1, mono.shape[1])


def test_six_channels_fold_with_the_itu_51_downmix_without_clipping(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, size=(6, 4800)).astype(np.float32)  # WAV order L R C LFE Ls Rs
    loaded = load_audio(_write(tmp_path / "surround.wav", x))
    norm = 1 + 2 * A
    np.testing.assert_allclose(loaded.samples[0], (x[0] + A * x[2] + A * x[4]) / norm, atol=1e-6)
    np.testing.assert_allclose(loaded.samples[1], (x[1] + A * x[2] + A * x[5]) / norm, atol=1e-6)
    full_scale = load_audio(_write(tmp_path / "loud.wav", np.ones((6, 100), np.float32))).samples
    np.testing.assert_allclose(full_scale, 1.0, atol=1e-6)  # every speaker at 0 dBFS sums to exactly 0 dBFS


def test_ogg_surround_uses_vorbis_channel_order(tmp_path: Path) -> None:
    x = np.zeros((6, SR // 2), np.float32)
    x[1] = tone(1000, SR, 0.5)  # Vorbis order L C R Ls Rs LFE: index 1 is the centre
    path = tmp_path / "surround.ogg"
    sf.write(path, x.T, SR, format="OGG", subtype="VORBIS")
    out = load_audio(path).samples
    left, right = (float(np.sqrt(np.mean(ch**2))) for ch in out)
    assert left == pytest.approx(right, rel=0.05)
    assert left == pytest.approx(A / (1 + 2 * A) * 0.5 / math.sqrt(2), rel=0.1)


@pytest.mark.parametrize("channels", [3, 4, 5, 7, 8, 10, 12])
@pytest.mark.parametrize("container", ["WAV", "OGG"])
def test_other_layouts_keep_both_sides_and_never_clip(channels: int, container: str) -> None:
    matrix = downmix_matrix(channels, container)
    assert matrix.shape == (2, channels)
    assert matrix.sum(axis=1).max() == pytest.approx(1.0)
    assert (matrix >= 0).all() and (matrix.sum(axis=1) > 0.5).all()
    np.testing.assert_allclose(matrix[:, 0], [matrix[0, 0], 0.0])  # the first channel is always left


def test_quad_and_many_channel_folds_are_as_documented() -> None:
    np.testing.assert_allclose(downmix_matrix(4), np.array([[1, 0, A, 0], [0, 1, 0, A]]) / (1 + A), atol=1e-7)
    np.testing.assert_allclose(downmix_matrix(10)[0], np.tile([0.2, 0.0], 5), atol=1e-7)


def test_resample_8k_to_48k_keeps_length_pitch_and_energy(tmp_path: Path) -> None:
    signal = tone(1000, 8000, 1.0)
    loaded = load_audio(_write(tmp_path / "low.wav", signal[None], sr=8000), sample_rate=48000)
    assert loaded.samples.shape == (2, 48000)
    assert (loaded.sample_rate, loaded.original_sample_rate, loaded.original_frames) == (48000, 8000, 8000)
    assert peak_hz(loaded.samples[0], 48000) == pytest.approx(1000, abs=2)
    rms_in = np.sqrt(np.mean(signal[400:-400] ** 2))
    rms_out = np.sqrt(np.mean(loaded.samples[0, 2400:-2400] ** 2))
    assert rms_out == pytest.approx(rms_in, rel=0.01)


@pytest.mark.parametrize("rate", [44100, 48000, 16000])
def test_crop_equals_the_same_slice_of_the_whole_file(tmp_path: Path, rate: int) -> None:
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 3 * 44100)).astype(np.float32)
    path = _write(tmp_path / "noise.wav", noise, sr=44100)
    whole = load_audio(path, sample_rate=rate).samples
    crop = load_audio(path, sample_rate=rate, offset_seconds=1.2345, duration_seconds=0.77)
    assert crop.samples.shape == (2, round(0.77 * rate))
    first = round(1.2345 * rate)
    np.testing.assert_allclose(crop.samples, whole[:, first : first + crop.samples.shape[1]], atol=1e-5)
    tail = load_audio(path, sample_rate=rate, offset_seconds=2.5, duration_seconds=1.0).samples
    assert tail.shape[1] == whole.shape[1] - round(2.5 * rate)  # a span past the end comes back shorter


def test_offset_past_the_end_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.wav", tone(440, SR, 0.1)[None])
    with pytest.raises(RefrainInputError, match=r"short\.wav: offset 0\.200 s is past the end"):
        load_audio(path, offset_seconds=0.2)


def test_nonfinite_samples_are_zeroed_and_counted(tmp_path: Path) -> None:
    x = np.full((2, 1000), 0.25, np.float32)
    x[0, 10], x[1, 20], x[0, 30] = np.nan, np.inf, -np.inf
    path = _write(tmp_path / "broken.wav", x)
    loaded = load_audio(path)
    assert loaded.nonfinite_repaired == 3
    assert loaded.samples[0, 10] == 0 and loaded.samples[1, 20] == 0 and loaded.samples[0, 30] == 0
    assert np.isfinite(loaded.samples).all() and loaded.samples[0, 11] == 0.25
    crop = load_audio(path, offset_seconds=15 / SR, duration_seconds=100 / SR)
    assert crop.nonfinite_repaired == 2  # only the ones inside the crop


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    good = tmp / "good.flac"
    sf.write(good, np.stack([tone(440, SR, 0.5)] * 2).T, SR, format="FLAC")
    raw_wav = tmp / "raw.wav"
    sf.write(raw_wav, np.zeros((100, 2), np.float32), SR)
    opus = tmp / "good.opus"
    sf.write(opus, np.stack([tone(440, SR, 0.5)] * 2).T, SR, format="OGG", subtype="OPUS")
    paths = {
        "missing": tmp / "missing.wav",
        "zero_byte": tmp / "empty.flac",
        "text_named_mp3": tmp / "lyrics.mp3",
        "truncated_wav_header": tmp / "header_only.wav",
        "truncated_flac": tmp / "half.flac",
        "truncated_opus": tmp / "half.opus",
        "directory": tmp / "folder.wav",
        "no_frames": tmp / "silent.wav",
    }
    paths["zero_byte"].write_bytes(b"")
    paths["text_named_mp3"].write_text("[verse]\nthis is a lyrics file, not audio\n" * 20)
    paths["truncated_wav_header"].write_bytes(raw_wav.read_bytes()[:30])
    paths["truncated_flac"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    paths["truncated_opus"].write_bytes(opus.read_bytes()[: opus.stat().st_size // 2])
    paths["directory"].mkdir()
    sf.write(paths["no_frames"], np.zeros((0, 2), np.float32), SR)
    return paths


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "zero_byte",
        "text_named_mp3",
        "truncated_wav_header",
        "truncated_flac",
        "truncated_opus",
        "directory",
        "no_frames",
    ],
)
def test_bad_input_raises_one_line_error_naming_file_and_fix(tmp_path: Path, case: str) -> None:
    path = _bad_inputs(tmp_path)[case]
    with pytest.raises(RefrainInputError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "Fix: " in message and "\n" not in message


def test_text_file_is_diagnosed_as_text(tmp_path: Path) -> None:
    path = _bad_inputs(tmp_path)["text_named_mp3"]
    with pytest.raises(RefrainInputError, match="is a text file, not audio"):
        audio_info(path)


def test_one_sample_file_is_fine(tmp_path: Path) -> None:
    loaded = load_audio(_write(tmp_path / "one.wav", np.array([[0.5]], np.float32)), sample_rate=SR)
    assert loaded.samples.shape == (2, 1) and loaded.original_frames == 1


@pytest.mark.parametrize(("suffix", "subtype", "atol"), [(".wav", "FLOAT", 0.0), (".flac", "PCM_24", 2**-22)])
def test_save_audio_reloads_equal(tmp_path: Path, suffix: str, subtype: str, atol: float) -> None:
    x = np.random.default_rng(2).uniform(-1, 1, (2, 5000)).astype(np.float32)
    path = save_audio(tmp_path / "out" / f"song{suffix}", x, SR, subtype=subtype)
    np.testing.assert_allclose(load_audio(path).samples, x, atol=atol)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_save_audio_clips_instead_of_wrapping_and_accepts_mono(tmp_path: Path) -> None:
    path = save_audio(tmp_path / "hot.flac", np.array([1.5, -2.0, 0.5], np.float32), SR)
    np.testing.assert_allclose(load_audio(path, channels=1).samples[0], [1.0, -1.0, 0.5], atol=2**-22)


def test_save_audio_is_atomic_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_audio(tmp_path / "keep.wav", np.zeros((2, 10), np.float32), SR)
    before = path.read_bytes()

    def broken_write(file: str, *args: object, **kwargs: object) -> None:
        Path(file).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(audio_io.sf, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_audio(path, np.ones((2, 10), np.float32), SR)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


@pytest.mark.parametrize(
    ("name", "samples", "problem"),
    [
        ("song.mp3", np.zeros((2, 10)), "cannot write '.mp3' files"),
        ("song.wav", np.full((2, 10), np.nan), "20 sample values are NaN/inf"),
        ("song.wav", np.zeros((1000, 2)), "samples shaped (1000, 2) are not (channels, frames)"),
    ],
)
def test_save_audio_rejects_bad_requests(
    tmp_path: Path, name: str, samples: np.ndarray, problem: str
) -> None:
    with pytest.raises(RefrainInputError) as caught:
        save_audio(tmp_path / name, samples, SR)
    assert str(caught.value).startswith(f"{tmp_path / name}: {problem}")
    assert not (tmp_path / name).exists()


def test_fixture_mp3_partial_read(fixtures_dir: Path) -> None:
    path = fixtures_dir / "acestep_folder" / "test_track_001.mp3"
    crop = load_audio(path, sample_rate=48000, offset_seconds=30.0, duration_seconds=2.0)
    assert crop.samples.shape == (2, 96000) and crop.original_sample_rate == 48000
    assert crop.original_frames == pytest.approx(60 * 48000, rel=0.001)
    with sf.SoundFile(path) as handle:  # the seek is sample-exact: same samples as decoding from the start
        whole = handle.read(32 * 48000, dtype="float32", always_2d=True).T
    np.testing.assert_array_equal(crop.samples, np.clip(whole[:, 30 * 48000 : 32 * 48000], -1, 1))
    assert np.sqrt(np.mean(crop.samples**2)) > 0.01  # real music, not silence


def test_real_opus_track_partial_read_is_sample_exact() -> None:
    from immich_memories_music import tracks_dir

    path = sorted(tracks_dir().glob("*/*.opus"))[0]
    info = audio_info(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == ("OGG", "OPUS", 48000, 2)
    crop = load_audio(path, offset_seconds=10.0, duration_seconds=3.0)
    assert crop.samples.shape == (2, 144000)
    with sf.SoundFile(path) as handle:
        whole = handle.read(13 * 48000, dtype="float32", always_2d=True).T
    np.testing.assert_array_equal(crop.samples, np.clip(whole[:, 480000:624000], -1, 1))
    down = load_audio(path, sample_rate=44100, offset_seconds=10.0, duration_seconds=3.0)
    assert down.samples.shape == (2, 132300)
