"""Conditioning-cache storage and read speed on the embedded corpus, measured in one run, as markdown tables.

The embedded corpus (28 tracks, 14.7 min) is prepared with ``refrain-prepare --source embedded`` and
encoded twice by ``refrain.data.cache_build.build_cache`` (the code ``refrain-encode`` runs):

- **native**: float32 latents, float32 teacher features at the teachers' own frame rates (the default);
- **compact**: bfloat16 latents and features, teacher features average-pooled to the latent frame rate
  (``--latent_dtype bfloat16 --feature_dtype bfloat16 --teacher_rate latent``);
- **int8**: as compact, with the teacher features as int8 codes plus float32 scales per channel and per
  64-frame block (``--feature_dtype int8``; the style embeddings stay bfloat16).

Encoders: a random tiny Oobleck with Stable Audio Open's hop (2048 at 44.1 kHz: 21.5 latent frames/s,
16 channels), conf/repa/tiny_random's two random HuBERT teachers (MERT's 24 kHz / 75 frames/s and
mHuBERT's 16 kHz / 50 frames/s, 32-d) and the bundled MiniLM text encoder. Random weights give the
same shapes, hence the same bytes, as trained ones.

1. Bytes per minute of audio of every stored stream, as stored (safetensors holds raw tensor bytes),
   then projected to full-size encoders (64-channel latents; MERT-v1-330M 1024-d at 75/s; mHuBERT-147
   768-d at 50/s) at Stable Audio Open's (44.1 kHz / 2048) and ACE-Step 1.5's (48 kHz / 1920 = 25/s)
   latent rates, with the style embeddings as measured, and to 100,000 hours, against the target of
   under 5 MB per minute with both teachers.
2. REPA loss curves of a tiny DiT (conf/model/dit/tiny) trained on each cache with the same seed, and,
   as the noise floor, on the native and the pooled bf16 caches with another seed.
3. Read throughput of the cache: training items (crop + collate inputs) per second from one process.

    python bench/bench_cache.py [--steps 150] [--batch 4] [--frames 256] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from safetensors import safe_open

from refrain.bundles.vae import save_vae_bundle
from refrain.config import compose_config
from refrain.data.cache_build import build_cache
from refrain.data.collate import collate_dit
from refrain.data.conditioning_encoder import ConditioningEncoder, EncodeSettings
from refrain.data.dit_dataset import DiTDataModule
from refrain.data.feature_quant import QUANT_BLOCK
from refrain.data.options import LoaderOptions, OnlineEncoding
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.losses.repa import REPALoss
from refrain.models.teachers import TeacherSpec, create_random_hubert
from refrain.models.vae.oobleck import build_oobleck_vae
from refrain.tasks.dit_task import DiTTask

NATIVE = EncodeSettings()
COMPACT = EncodeSettings(latent_dtype="bfloat16", feature_dtype="bfloat16", teacher_rate="latent")
INT8 = replace(COMPACT, feature_dtype="int8")
CACHES = {"native": NATIVE, "compact": COMPACT, "int8": INT8}
TARGET_MB = 5.0  # per minute of audio, with both teachers
RUNS = {  # REPA curve label: (cache, seed)
    "native fp32": ("native", 0),
    "pooled bf16": ("compact", 0),
    "pooled int8": ("int8", 0),
    "native fp32, seed 1": ("native", 1),
    "pooled bf16, seed 1": ("compact", 1),
}
GAPS = (  # the differences printed: storage effects first, then the seed-to-seed noise floor
    ("native fp32", "pooled bf16"),
    ("pooled bf16", "pooled int8"),
    ("native fp32", "native fp32, seed 1"),
    ("pooled bf16", "pooled bf16, seed 1"),
)
FULL_TEACHERS = {"mert": (1024, 75.0), "mhubert": (768, 50.0)}  # MERT-v1-330M, mHuBERT-147: dim, frames/s
SETTINGS = {"Stable Audio Open": 44100 / 2048, "ACE-Step 1.5": 48000 / 1920}  # latent frames/s
LATENT_CHANNELS = 64
MINUTES_100K_HOURS = 100_000 * 60


def build_world(root: Path, tracks: int) -> tuple[Path, Path, dict[str, TeacherSpec]]:
    """The prepared embedded corpus (``tracks`` of its songs, spread over its moods), a tiny VAE bundle with
    SAO's hop and two tiny random teachers."""
    from datasets import DatasetDict

    from refrain.cli.prepare import main as prepare
    from refrain.data.prepare import save_dataset_atomic
    from refrain.data.schema import load_prepared, records_to_dataset

    dataset, bundle = root / f"subset{tracks}", root / "vae"
    teachers = {
        "mert": TeacherSpec("mert", "", 24000, layer=1, chunk_seconds=5.0, normalize=True, feature_dim=32),
        "mhubert": TeacherSpec("mhubert", "", 16000, layer=-1, chunk_seconds=30.0, feature_dim=32),
    }
    teachers = {
        name: replace(spec, checkpoint_dir=str(root / "teachers" / name)) for name, spec in teachers.items()
    }
    if (
        root / "ready"
    ).exists():  # a --workdir of an earlier run: its dataset, encoders and caches are reused
        return dataset, bundle, teachers
    with contextlib.redirect_stdout(io.StringIO()):
        assert prepare(["--source", "embedded", "--output", str(root / "embedded"), "--no_progress"]) == 0
    prepared = load_prepared(root / "embedded")
    songs = sorted((*prepared["train"], *prepared["validation"]), key=lambda r: r["filename"])
    chosen = songs[:: max(1, len(songs) // tracks)][:tracks]
    subset = DatasetDict({"train": records_to_dataset(chosen), "validation": records_to_dataset([])})
    save_dataset_atomic(subset, dataset)
    torch.manual_seed(0)
    vae = build_oobleck_vae(
        sample_rate=44100,
        downsampling_ratios=[4, 4, 8, 16],
        channel_multiples=[1, 2, 4, 4],
        encoder_hidden_size=32,
        decoder_channels=16,
        latent_channels=16,
    )
    save_vae_bundle(bundle, vae.autoencoder, {"model": {"vae": {"chunk_seconds": 10.0}}})
    for seed, name in enumerate(teachers, start=1):
        create_random_hubert(teachers[name].checkpoint_dir, hidden_size=32, num_layers=2, seed=seed)
    (root / "ready").touch()
    return dataset, bundle, teachers


def stream_bytes(folder: Path) -> tuple[dict[str, int], dict[str, int], float]:
    """Bytes and elements per stored stream summed over a cache folder's entries, and the audio minutes."""
    nbytes: dict[str, int] = {}
    frames: dict[str, int] = {}
    seconds = 0.0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
            seconds += int(meta["num_samples"]) / int(meta["sample_rate"])
            for name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensor = handle.get_slice(name)
                shape = tensor.get_shape()
                size = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8, "BOOL": 1, "U8": 1, "I8": 1}[
                    tensor.get_dtype()
                ]
                nbytes[name] = nbytes.get(name, 0) + size * int(torch.tensor(shape).prod())
                frames[name] = frames.get(name, 0) + (shape[-1] if name.startswith("latent") else shape[0])
    return nbytes, frames, seconds / 60.0


def feature_bytes(settings: EncodeSettings) -> float:
    """Bytes per stored teacher value: the dtype's, plus int8's float32 scale per QUANT_BLOCK frames."""
    return {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.0 + 4.0 / QUANT_BLOCK}[
        settings.feature_dtype
    ]


def storage_tables(folders: dict[str, Path]) -> list[str]:
    measured = {label: stream_bytes(folder) for label, folder in folders.items()}
    labels = list(measured)
    lines = [
        "| stream (tiny encoders, as stored) | "
        + " | ".join(f"{label}: frames/s | {label}: kB/min" for label in labels)
        + " |",
        "|---|" + "---|---|" * len(labels),
    ]
    for name in sorted(set().union(*(m[0] for m in measured.values()))):
        row = [name]
        for label in labels:
            nbytes, frames, minutes = measured[label]
            if name not in nbytes:
                row += ["-", "-"]
                continue
            rate = "per song" if name.startswith("style") else f"{frames[name] / minutes / 60:.2f}"
            row += [rate, f"{nbytes[name] / minutes / 1e3:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    totals = [sum(measured[label][0].values()) / measured[label][2] / 1e6 for label in labels]
    lines.append("| all (MB/min) | " + " | ".join(f" | {total:.3f}" for total in totals) + " |")
    style = {  # the text encoder's output does not depend on the audio encoders: carried over as measured
        label: sum(v for k, v in measured[label][0].items() if k.startswith("style")) / measured[label][2]
        for label in labels
    }
    lines += [
        "",
        "| full-size encoders, MB per minute of audio | latents (mean + std) | MERT-330M | mHuBERT-147 | style "
        "| total | 100,000 h |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"native": "native fp32", "compact": "compact bf16", "int8": "compact int8 + scales"}
    best: dict[str, float] = {}
    for setting, rate in SETTINGS.items():
        for label in labels:
            settings = CACHES[label]
            latents = 2 * LATENT_CHANNELS * rate * 60 * (4 if settings.latent_dtype == "float32" else 2)
            teachers = [
                dim * (rate if settings.teacher_rate == "latent" else native) * 60 * feature_bytes(settings)
                for dim, native in FULL_TEACHERS.values()
            ]
            total = latents + sum(teachers) + style[label]
            best[setting] = min(best.get(setting, float("inf")), total / 1e6)
            lines.append(
                f"| {setting} ({rate:.2f} latent frames/s), {names[label]} | {latents / 1e6:.3f} | "
                f"{teachers[0] / 1e6:.2f} | {teachers[1] / 1e6:.2f} | {style[label] / 1e6:.3f} | "
                f"{total / 1e6:.2f} | {total * MINUTES_100K_HOURS / 1e12:.1f} TB |"
            )
    met = all(value < TARGET_MB for value in best.values())
    lines += [
        "",
        f"target: under {TARGET_MB:g} MB per minute with both teachers at both settings: "
        + ("met" if met else "NOT met")
        + " (smallest: "
        + ", ".join(f"{setting} {value:.2f} MB" for setting, value in best.items())
        + ")",
    ]
    return lines


def data_module(
    dataset: Path,
    bundle: Path,
    teachers: dict[str, TeacherSpec],
    settings: EncodeSettings,
    args: Any,
    loader: LoaderOptions | None = None,
) -> DiTDataModule:
    """The DiT data module over the cache ``settings`` name, read in the benchmark process (no workers)."""
    data = DiTDataModule(
        str(dataset),
        str(bundle),
        None,
        teachers,
        batch_size=args.batch,
        max_frames=args.frames,
        seed=0,
        val_items=1,
        storage=settings,
        online=OnlineEncoding(fallback=False),
        loader=loader or LoaderOptions(num_workers=0),
    )
    data.setup("fit")
    return data


def train_curve(
    dataset: Path,
    bundle: Path,
    teachers: dict[str, TeacherSpec],
    settings: EncodeSettings,
    seed: int,
    args: Any,
) -> tuple[dict[str, list[float]], DiTTask]:
    """Per-step flow and REPA losses of a tiny DiT trained from one cache (what Lightning runs, minus logging)."""
    data = data_module(dataset, bundle, teachers, settings, args)
    cfg = compose_config(["model/dit=tiny", "model.dit.config.latent_channels=16"])
    torch.manual_seed(seed)
    task = DiTTask(
        instantiate(cfg.model.dit),
        loss=FlowMatchingLoss(shift=3.0),
        optimizer=partial(torch.optim.AdamW, lr=3e-4),
        repa=partial(REPALoss, teachers=teachers, projector_dim=64),
    )
    optimizer = task.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    curve: dict[str, list[float]] = {"flow": [], "repa": []}
    loader, epoch = data.train_dataloader(), 0
    while len(curve["repa"]) < args.steps:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            terms = task.compute_loss(batch)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(task.model.parameters(), 0.5)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            curve["flow"].append(float(terms["flow"].detach()))
            curve["repa"].append(float(terms["repa"].detach()))
            if len(curve["repa"]) == args.steps:
                break
        epoch += 1
    return curve, task


@torch.no_grad()
def native_repa(task: DiTTask, data: DiTDataModule, batches: int = 4) -> float:
    """A trained task's REPA loss against the features of ``data``'s cache, on fixed crops and noise.

    DiTs trained on different caches are judged here against the same targets (against native-rate
    ones the projection is resampled to the native frame count, as in training)."""
    loader = data.train_dataloader()
    loader.sampler.set_epoch(10_000)  # crops no training epoch drew
    torch.manual_seed(1234)
    values = [
        float(task.compute_loss(batch)["repa"]) for _, batch in zip(range(batches), loader, strict=False)
    ]
    return statistics.fmean(values)


def repa_table(curves: dict[str, dict[str, list[float]]], window: int) -> list[str]:
    labels = list(curves)
    lines = [
        "| steps | " + " | ".join(f"REPA, {label}" for label in labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    steps = len(curves[labels[0]]["repa"])
    means = {label: [] for label in labels}
    for start in range(0, steps, window):
        row = [f"{start + 1}-{min(steps, start + window)}"]
        for label in labels:
            value = statistics.fmean(curves[label]["repa"][start : start + window])
            means[label].append(value)
            row.append(f"{value:.4f}")
        lines.append("| " + " | ".join(row) + " |")
    tail = slice(len(means[labels[0]]) // 2, None)

    def gap(a: str, b: str) -> str:
        windows = statistics.fmean(abs(x - y) for x, y in zip(means[a], means[b], strict=True))
        step = max(abs(x - y) for x, y in zip(curves[a]["repa"], curves[b]["repa"], strict=True))
        return f"{windows:.5f} (largest single step {step:.5f})"

    lines += [
        "",
        f"mean |difference| over the {window}-step windows: "
        + "; ".join(f"{a} vs {b}: {gap(a, b)}" for a, b in GAPS if a in means and b in means),
        "second half, mean REPA: "
        + ", ".join(f"{label} {statistics.fmean(means[label][tail]):.4f}" for label in labels),
    ]
    return lines


def read_rate(data: DiTDataModule, seconds: float = 5.0) -> float:
    """Training items (one crop each, through the real dataset and collate) per second, one process."""
    dataset = data.train_set
    assert dataset is not None
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        collate_dit([dataset[count + k] for k in range(4)])
        count += 4
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracks", type=int, default=8, help="embedded tracks used (of 28; 2 CPU cores: keep few)"
    )
    parser.add_argument("--steps", type=int, default=150, help="training steps per REPA curve")
    parser.add_argument("--window", type=int, default=25, help="steps averaged per row of the REPA table")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=256, help="crop length in latent frames (256 = 11.9 s)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) the encoded corpus here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dataset, bundle, teachers = build_world(args.workdir or Path(tmp), args.tracks)
        folders, encode_s = {}, {}
        for label, settings in CACHES.items():
            encoder = ConditioningEncoder.from_paths(bundle, None, teachers, settings)
            report = build_cache(dataset, encoder, ["train"], progress=False)
            folders[label], encode_s[label] = report.cache_dir, report.wall_seconds
            print(f"{label}: {report.summary().splitlines()[1]}; {report.summary().splitlines()[3]}")
        print("\n".join(["", *storage_tables(folders), ""]))
        rates = {
            label: read_rate(data_module(dataset, bundle, teachers, settings, args))
            for label, settings in CACHES.items()
        }
        print(
            "| per-song cache read, one process | " + " | ".join(CACHES) + " |\n|---|" + "---|" * len(CACHES)
        )
        print(
            f"| items/s ({args.frames}-frame crops) | "
            + " | ".join(f"{rates[k]:.0f}" for k in CACHES)
            + " |\n"
        )
        runs = {
            label: train_curve(dataset, bundle, teachers, CACHES[cache], seed, args)
            for label, (cache, seed) in RUNS.items()
        }
        print("\n".join(repa_table({label: curve for label, (curve, _) in runs.items()}, args.window)))
        for target, cache in (("native fp32", NATIVE), ("pooled bf16", COMPACT)):
            target_data = data_module(dataset, bundle, teachers, cache, args)
            judged = {label: native_repa(task, target_data) for label, (_, task) in runs.items()}
            print(
                f"REPA after training, against {target} features (same crops and noise): "
                + ", ".join(f"{label} {value:.4f}" for label, value in judged.items())
            )


if __name__ == "__main__":
    main()
