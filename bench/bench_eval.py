"""Evaluation throughput, measured in one run: seconds of audio scored per CPU-second, per metric.

Each reference-based metric of ``refrain-eval vae`` scores a 10 s stereo clip of the embedded corpus
against its 128 kbps MP3 round trip; the song statistics and the Fréchet distance are timed the same
way. CPU time is time.process_time (all threads), so the figures do not depend on other load.
Embedding models (MERT, CLAP, Whisper) are not timed here: their cost is the model's forward pass,
which depends on the checkpoint the user points at.

    .venv/bin/python bench/bench_eval.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from immich_memories_music import tracks_dir

from refrain.audio.io import load_audio
from refrain.audio.mp3 import Mp3Setting, mp3_roundtrip
from refrain.eval import signal_metrics as sm
from refrain.eval.frechet import GaussianStats, frechet_distance
from refrain.eval.song_stats import song_statistics
from refrain.losses.metrics import high_band_energy_error, si_sdr

SR = 44100
SECONDS = 10.0


def rate(work: Callable[[], object], min_cpu: float = 2.0) -> float:
    """Seconds of audio per CPU-second: repeat ``work`` (one SECONDS clip) for at least ``min_cpu``."""
    work()
    done, start = 0, time.process_time()
    while (spent := time.process_time() - start) < min_cpu:
        work()
        done += 1
    return done * SECONDS / spent


def main() -> None:
    import torch

    torch.set_num_threads(1)
    track = sorted(tracks_dir().rglob("*.opus"))[0]
    clean = load_audio(track, SR, 2, 20.0, SECONDS).samples
    coded = mp3_roundtrip(clean, SR, Mp3Setting(bitrate_kbps=128))
    ref_t, est_t = torch.from_numpy(clean)[None], torch.from_numpy(coded)[None]
    scorer = sm.ReconstructionScorer(SR)
    jobs = {
        "stoi (pystoi)": lambda: sm.stoi(clean, coded, SR),
        "pesq wb (pesq)": lambda: sm.pesq_wb(clean, coded, SR),
        "mcd": lambda: sm.mcd(clean, coded, SR),
        "mrstft (auraloss)": lambda: scorer.mrstft(est_t, ref_t),
        "si_sdr": lambda: si_sdr(est_t, ref_t),
        "lsd": lambda: sm.lsd(clean, coded),
        "hf_energy_db": lambda: high_band_energy_error(est_t, ref_t, SR),
        "all of the above": lambda: scorer.score(clean, coded),
        "song statistics (pyloudnorm, centroid)": lambda: song_statistics(clean, SR),
    }
    print(f"evaluation throughput on {track.name} (10 s stereo at {SR} Hz vs its 128 kbps MP3), 1 thread")
    print(f"{'metric':42s} {'audio s / CPU s':>16s}")
    for name, work in jobs.items():
        print(f"{name:42s} {rate(work):16.1f}")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((500, 768)), rng.standard_normal((500, 768)) + 0.1
    start = time.process_time()
    frechet_distance(GaussianStats.of(a), GaussianStats.of(b))
    print(f"{'frechet distance, 500 x 768 embeddings':42s} {time.process_time() - start:13.2f} s")


if __name__ == "__main__":
    main()
