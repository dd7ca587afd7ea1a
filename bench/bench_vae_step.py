"""The demo VAE's training step on this machine: its loss and its activations, each against the stock code.

1. ``StereoMRSTFTLoss`` (mid/side + left/right, 7 FFT sizes) against the same terms computed signal by
   signal, one auraloss-composed multi-resolution loss each (``refrain.losses.spectral_reference``; the
   loss ran so until this version), for the
   demo recipe's loss (mel bands) and the full recipe's (A-weighted FFT bins, conf/task/vae.yaml): both run
   forward + backward on the same batch, interleaved (A B A B ...): median times, speed-up, and the
   difference of their values (rounding only).
2. The whole step of the demo recipe (``experiment=demo_vae``: the real ``VAETask`` in a Lightning
   Trainer on an in-memory batch of its 2 x 0.74 s crops): eager and with ``--torch_compile`` (the
   Oobleck Snake activations compiled in place, refrain/models/compile.py), alternating E C E C so drift
   on a shared machine hits both; printed with each run's first step (compiling, unless torch's on-disk
   cache already holds the kernels) and the speed-up of the medians.

    python bench/bench_vae_step.py [--batch 2] [--crop 32768] [--repeats 10] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from hydra.utils import instantiate
from vae_clock import step_end_times

from refrain.allocator import keep_freed_memory
from refrain.config import compose_config
from refrain.losses.spectral import StereoMRSTFTLoss
from refrain.losses.spectral_reference import StereoReference
from refrain.models.compile import compile_blocks


def timed(loss: torch.nn.Module, prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Seconds of one forward + backward, and the loss's value."""
    prediction = prediction.detach().requires_grad_()
    start = time.perf_counter()
    value = loss(prediction, target)["stft"]
    value.backward()
    return time.perf_counter() - start, float(value.detach())


def demo_step_seconds(batch: int, crop: int, steps: int, compiled: bool) -> tuple[float, float]:
    """Median seconds per step of the demo recipe's VAETask, and the seconds its first step took."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(["experiment=demo_vae", f"run_dir={tmp}", f"dataset_path={tmp}"])
        task = instantiate(cfg.task)
        if compiled and (note := compile_blocks(task.model)):
            print(f"note: {note}")
        start, times = step_end_times(task, batch, crop, steps + 2)
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    return statistics.median(gaps), times[0] - start


LOSSES = {  # the recipes' losses: experiment=demo_vae's and conf/task/vae.yaml's
    "demo recipe (mel bands)": {"mel_bins": 128},
    "full recipe (A-weighted FFT bins)": {"perceptual_weighting": True},
}


def loss_table(args: argparse.Namespace) -> None:
    """Section 1 of the module doc."""
    generator = torch.Generator().manual_seed(0)
    target = 0.1 * torch.randn(args.batch, 2, args.crop, generator=generator)
    prediction = target + 0.02 * torch.randn(target.shape, generator=generator)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"StereoMRSTFTLoss forward + backward, batch {args.batch} x 2 ch x {args.crop} samples, "
        f"{args.threads} thread(s), load average {load}\n"
    )
    print("| loss | batched ms | signal by signal ms | speed-up | value difference |")
    print("|---|---|---|---|---|")
    for name, options in LOSSES.items():
        ours = StereoMRSTFTLoss(44100, **options)
        pair = {"batched": ours, "signal by signal": StereoReference(ours)}
        times: dict[str, list[float]] = {side: [] for side in pair}
        values: dict[str, float] = {}
        for repeat in range(args.repeats + 1):
            for side, loss in pair.items():
                seconds, values[side] = timed(loss, prediction, target)
                if repeat:  # the first round warms both up
                    times[side].append(seconds)
        median = {side: statistics.median(t) for side, t in times.items()}
        print(
            f"| {name} | {1e3 * median['batched']:.1f} | {1e3 * median['signal by signal']:.1f} | "
            f"{median['signal by signal'] / median['batched']:.2f}x | "
            f"{abs(values['batched'] - values['signal by signal']):.1e} |"
        )


def step_table(args: argparse.Namespace) -> None:
    """Section 2 of the module doc."""
    rows = [("eager", False), ("--torch_compile", True)] * 2
    results = [
        (name, *demo_step_seconds(args.batch, args.crop, args.steps, compiled)) for name, compiled in rows
    ]
    print(f"\nThe demo VAE's training step (experiment=demo_vae, {args.steps} timed steps each)\n")
    print("| run | median s per step | first step s |")
    print("|---|---|---|")
    for name, seconds, first in results:
        print(f"| {name} | {seconds:.3f} | {first:.1f} |")
    eager = statistics.median(seconds for name, seconds, _ in results if name == "eager")
    compiled = statistics.median(seconds for name, seconds, _ in results if name != "eager")
    print(
        f"\n--torch_compile speed-up {eager / compiled:.2f}x (median of the eager runs over the compiled ones)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="the demo recipe's batch")
    parser.add_argument("--crop", type=int, default=32768, help="samples per crop (the demo's 0.74 s)")
    parser.add_argument("--repeats", type=int, default=10, help="loss forward + backward passes each")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # what refrain's CPU runs use
    loss_table(args)
    step_table(args)


if __name__ == "__main__":
    main()
