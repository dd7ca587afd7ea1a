"""VAE training speed vs. data-pipeline throughput on this machine, measured in one run (markdown table).

For each VAE preset, with the crop length and batch size its recipe trains with:

- training steps/s of ``VAETask`` in its expensive phase (generator + discriminator updates, EMA),
  run by a real Lightning Trainer on an in-memory batch, so only the model's compute is timed;
- what one step consumes: batch x crop seconds x steps/s = seconds of audio per second;
- the data pipeline's throughput per worker, in one process exactly as a DataLoader worker runs it:
  ``AudioCropDataset`` over the embedded corpus (48 kHz Opus), i.e. decode of the crop span + resample
  to the model rate + MP3 degradation (random CBR/VBR setting, a third left clean);
- their ratio; it scales linearly with ``num_workers`` (workers are independent processes), printed
  for 1, 2, 4 and 8 workers. Above 1 the GPU/CPU never waits for data.

    python bench/bench_vae.py [--presets tiny,mid] [--steps 4] [--items 24] [--threads N]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from vae_clock import step_end_times

from refrain.audio.io import audio_info
from refrain.audio.mp3 import Mp3Degrader
from refrain.config import conf_dir
from refrain.data.audio_dataset import AudioCropDataset
from refrain.data.embedded import embedded_tracks_dir
from refrain.models.vae.discriminator import MultiScaleSTFTDiscriminator
from refrain.tasks.vae_task import VAEObjective, VAETask

# preset -> (batch size, crop samples) of the recipe that trains it
RECIPES = {"tiny": (2, 16384), "mid": (4, 65536), "sao": (4, 65536), "ace15": (4, 65536)}


@dataclass
class Result:
    preset: str
    parameters: int
    batch: int
    crop_seconds: float
    steps_per_second: float
    pipeline_seconds_per_second: float

    @property
    def consumed(self) -> float:
        return self.batch * self.crop_seconds * self.steps_per_second

    @property
    def ratio(self) -> float:
        return self.pipeline_seconds_per_second / self.consumed


def build_task(preset: str) -> VAETask:
    vae = instantiate(OmegaConf.load(conf_dir() / "model" / "vae" / f"{preset}.yaml"))
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-4, betas=(0.8, 0.99), weight_decay=1e-3)
    return VAETask(
        vae,
        MultiScaleSTFTDiscriminator(audio_channels=vae.audio_channels),
        optimizer,
        optimizer,
        objective=VAEObjective(adversarial_start_step=0),
        gradient_clip_val=0.5,
    )


def training_steps_per_second(
    preset: str, batch: int, crop: int, steps: int, warmup: int = 1
) -> tuple[float, int]:
    torch.manual_seed(0)
    task = build_task(preset)
    _, times = step_end_times(task, batch, crop, steps + warmup)
    elapsed = times[-1] - times[warmup - 1]
    return steps / elapsed, sum(p.numel() for p in task.model.parameters())


def corpus() -> list[tuple[str, float]]:
    files = sorted(embedded_tracks_dir().rglob("*.opus"))
    return [(str(path), audio_info(path).duration) for path in files]


def pipeline_seconds_per_second(sample_rate: int, crop: int, items: int) -> float:
    """Seconds of audio one worker delivers per second: decode + crop + resample + MP3 degrade."""
    dataset = AudioCropDataset(corpus(), sample_rate, crop, degrader=Mp3Degrader(sample_rate), seed=0)
    dataset[0]  # first-call set-up (codec libraries) is not part of the steady state
    start = time.perf_counter()
    delivered = 0
    for key in range(1, items + 1):
        item = dataset[key * 7919]  # spread keys: different files, offsets and MP3 settings
        delivered += 0 if item is None else crop
    return delivered / sample_rate / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,mid")
    parser.add_argument(
        "--steps", type=int, default=4, help="timed training steps per preset (after 1 warm-up)"
    )
    parser.add_argument("--items", type=int, default=24, help="crops the pipeline measurement produces")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for the training measurement"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU, {torch.get_num_threads()} torch threads"
    )
    results = []
    for preset in args.presets.split(","):
        batch, crop = RECIPES[preset]
        rate = int(OmegaConf.load(conf_dir() / "model" / "vae" / f"{preset}.yaml").sample_rate)
        steps, parameters = training_steps_per_second(preset, batch, crop, args.steps)
        pipeline = pipeline_seconds_per_second(rate, crop, args.items)
        results.append(Result(preset, parameters, batch, crop / rate, steps, pipeline))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nVAE training vs. data pipeline ({device}, {os.cpu_count()} CPUs, load average {load}; pipeline = 1 worker)\n"
    )
    print(
        "| preset | params | batch x crop | steps/s | audio s/s consumed | pipeline s/s per worker | ratio (1 worker) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.preset} | {r.parameters / 1e6:.1f} M | {r.batch} x {r.crop_seconds:.2f} s | {r.steps_per_second:.3f} "
            f"| {r.consumed:.2f} | {r.pipeline_seconds_per_second:.1f} | {r.ratio:.1f} |"
        )
    print("\nRatio with more workers (workers are independent processes, so throughput adds up):\n")
    print("| preset | 1 worker | 2 workers | 4 workers | 8 workers |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r.preset} | " + " | ".join(f"{r.ratio * w:.1f}" for w in (1, 2, 4, 8)) + " |")


if __name__ == "__main__":
    main()
