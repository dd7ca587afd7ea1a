"""Audio pipeline throughput, measured in one run: seconds of audio handled per CPU-second.

Covers what a VAE DataLoader worker does per item: decode a random crop (Opus, MP3), resample,
MP3-degrade. CPU time is time.process_time (all threads of this process), so the numbers say how
many worker cores a training run needs, independent of other load on the machine.

    .venv/bin/python bench/bench_audio.py
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from immich_memories_music import tracks_dir

from refrain.audio.io import audio_info, load_audio
from refrain.audio.mp3 import Mp3Setting, encode_mp3, mp3_roundtrip
from refrain.audio.resample import resample

SR = 48000
CLIP_SECONDS = 10.0
CROP_SECONDS = 3.0


def audio_seconds_per_cpu_second(work: Callable[[], float], min_cpu: float = 1.0) -> float:
    """Repeat `work` (which returns the seconds of audio it handled) for at least `min_cpu` CPU-s."""
    work()  # warm-up: imports, first-call allocations
    done, start = 0.0, time.process_time()
    while (spent := time.process_time() - start) < min_cpu:
        done += work()
    return done / spent


def job(seconds: float, fn: Callable[..., object], *args: object) -> Callable[[], float]:
    """Work item: call fn(*args), which handles `seconds` of audio."""

    def work() -> float:
        fn(*args)
        return seconds

    return work


def crop_reader(path: Path, rng: np.random.Generator, sample_rate: int = SR) -> Callable[[], float]:
    """Work item: load a random CROP_SECONDS crop at `sample_rate`, like a DataLoader worker."""
    duration = audio_info(path).duration

    def work() -> float:
        offset = float(rng.uniform(0.0, duration - CROP_SECONDS))
        load_audio(path, sample_rate=sample_rate, offset_seconds=offset, duration_seconds=CROP_SECONDS)
        return CROP_SECONDS

    return work


def main() -> None:
    rng = np.random.default_rng(0)
    opus = sorted(tracks_dir().glob("*/*.opus"))[0]
    music = load_audio(opus, sample_rate=SR, duration_seconds=CLIP_SECONDS).samples  # real 48 kHz stereo
    rows: list[tuple[str, str, float]] = []

    for setting in (
        Mp3Setting(64),
        Mp3Setting(128),
        Mp3Setting(320),
        *(Mp3Setting(None, q) for q in (0, 4, 7)),
    ):
        rate = audio_seconds_per_cpu_second(job(CLIP_SECONDS, mp3_roundtrip, music, SR, setting))
        rows.append(("MP3 degrade (encode+decode), 10 s 48 kHz stereo", str(setting), rate))

    whole = load_audio(opus, sample_rate=SR).samples
    song = np.concatenate([whole, whole], axis=1)[:, : 60 * SR]  # fixture-like: 60 s, 48 kHz stereo, 192 kbps
    with tempfile.TemporaryDirectory() as tmp:
        mp3 = Path(tmp) / "song.mp3"
        mp3.write_bytes(encode_mp3(song, SR, Mp3Setting(192)))
        rows.append(
            (
                "decode random 3 s crop",
                f"Opus ({opus.name})",
                audio_seconds_per_cpu_second(crop_reader(opus, rng)),
            )
        )
        rows.append(
            (
                "decode random 3 s crop",
                "MP3 CBR 192, 60 s (lameenc)",
                audio_seconds_per_cpu_second(crop_reader(mp3, rng)),
            )
        )
        fixtures = os.environ.get("REFRAIN_FIXTURES")
        real = Path(fixtures or "-") / "acestep_folder" / "test_track_001.mp3"
        if real.is_file():
            rows.append(
                (
                    "decode random 3 s crop",
                    "fixture MP3 (ffmpeg, 60 s)",
                    audio_seconds_per_cpu_second(crop_reader(real, rng)),
                )
            )
        rows.append(
            (
                "decode random 3 s crop -> 44.1 kHz",
                "MP3 CBR 192 + soxr",
                audio_seconds_per_cpu_second(crop_reader(mp3, rng, 44100)),
            )
        )
        full = audio_seconds_per_cpu_second(job(CROP_SECONDS, load_audio, mp3))  # decode all, keep 3 s
        rows.append(("3 s crop by decoding the whole file (no seek)", "MP3 CBR 192, 60 s", full))

    for src, dst in ((44100, 48000), (48000, 44100), (32000, 48000)):
        clip = resample(music, SR, src)
        rate = audio_seconds_per_cpu_second(job(CLIP_SECONDS, resample, clip, src, dst))
        rows.append(("soxr resample (HQ), stereo", f"{src} -> {dst} Hz", rate))

    print("| operation | setting | audio seconds per CPU-second |")
    print("|---|---|---:|")
    for operation, setting, rate in rows:
        print(f"| {operation} | {setting} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
