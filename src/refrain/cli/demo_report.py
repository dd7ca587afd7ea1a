"""The end of `make demo`: did the models learn the corpus's time structure? Figures and one picture.

Printed next to their targets (issue 19) and the corpus's own figures, so a reader sees at once whether
the VAE keeps the changes over time of held-out songs and whether the DiT's songs move like music and
change with the prompt. Nothing here lowers a target: a figure that misses it is printed as missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from refrain.eval import demo_figures as fig


def target_mark(value: float, target: float) -> str:
    """Three decimals: a figure just under its target (0.796 against 0.8) must not read as reaching it."""
    return f"{value:.3f} ({'ok' if value >= target else 'MISSED'}, target >= {target:g})"


def vae_section(vae: Any, dataset: Path) -> list[dict[str, float | str]]:
    """Print the VAE's held-out figures (one row per song + mean) and return the rows."""
    rows = fig.vae_time_structure(vae, dataset)
    mean = fig.mean_row(rows)
    print("VAE on the held-out songs (10 s from each song's middle, reconstructed from clean audio):")
    print(fig.format_table([*rows, mean]))
    for key, target in fig.VAE_TARGETS.items():
        print(f"  {key}: {target_mark(float(mean[key]), target)}")
    return rows


def song_section(
    songs: Mapping[str, np.ndarray], rate: int, corpus: Mapping[str, Mapping[str, float]]
) -> None:
    """Print each prompt's song statistics side by side with the corpus's min / median."""
    from refrain.eval.song_stats import song_statistics

    stats = {name: song_statistics(audio, rate) for name, audio in songs.items()}
    rows: list[dict[str, float | str]] = [{"song": name, **values} for name, values in stats.items()]
    rows += [{"song": f"corpus {k}", **{m: corpus[m][k] for m in corpus}} for k in ("min", "median")]
    seconds = max(np.shape(audio)[-1] for audio in songs.values()) / rate
    print(f"\nDiT songs ({seconds:.0f} s, one per prompt) next to the corpus's songs (whole songs):")
    print(fig.format_table(rows))
    for name, values in stats.items():
        for key, target in fig.SONG_TARGETS.items():
            print(f"  {name}: {key} {target_mark(values[key], target)}")
    if len(stats) == 2:
        (a, sa), (b, sb) = stats.items()
        distance = fig.spectral_distance(songs[a], songs[b], rate)
        print(
            f"  {a} vs {b}: loudness {sa['loudness_lufs']:.1f} vs {sb['loudness_lufs']:.1f} LUFS, centroid "
            f"{sa['centroid_hz']:.0f} vs {sb['centroid_hz']:.0f} Hz, mean log-mel distance {distance:.1f} dB"
        )


def report(out: Path, prompts: Mapping[str, str], options: Any) -> Path:
    """All figures of the demo run in ``out`` and ``out/demo.png``; returns the PNG's path."""
    from refrain.audio.io import load_audio
    from refrain.eval.vae_eval import heldout_clips, reconstruct_with
    from refrain.sampling.pipeline import Pipeline

    dataset = out / "dataset"
    pipeline = Pipeline.from_bundle(out / "dit_bundle")
    vae = pipeline.vae
    rate = vae.sample_rate
    vae_section(vae, dataset)
    songs = {name: load_audio(out / f"song_{name}.flac", rate, 2).samples for name in prompts}
    song_section(songs, rate, fig.corpus_statistics(dataset, rate))

    clip = heldout_clips(dataset, rate)[0]
    tags = ", ".join(fig.record_tags(dataset, clip.key))
    seconds = clip.audio.shape[-1] / rate
    sample = pipeline.text2music(tags, lyrics="", duration=seconds, options=options).audio
    png = fig.save_triptych(
        out / "demo.png",
        [
            (f"original: held-out song {clip.key} (middle {seconds:.0f} s)", clip.audio),
            ("demo VAE reconstruction", reconstruct_with(vae, clip.audio, rate)),
            (f"demo DiT sample for its tags: {tags}", sample),
        ],
        rate,
    )
    print(f"\npicture (original / VAE / DiT): {png}")
    return png
