"""Sampler speed, measured in one run: real-time factor per solver and the sampler's own overhead.

For the tiny and the mid-size (conf/model/dit/small.yaml) DiT presets, each solver samples one song
with APG guidance (ACE-Step's defaults: scale 15, guidance on the middle half of the steps, two model
passes batched into one call there). Reported per row:

- RTF: seconds of audio generated per second of wall time for the latent sampling loop (guided
  velocity, solver, steps; the VAE decode is a separate, solver-independent cost and is left out);
- audio s / CPU s: the same per CPU-second of this process (all threads), which a busy shared machine
  distorts less than wall time;
- overhead: the share of that wall time spent outside the model's forward passes (guidance math,
  solver updates, and the conditioning, which the DiT embeds once per run in ``prepare``), from timing
  every model call against the whole loop; target <= 1 %.

Steps: 30 and 60 per solver (ACE-Step v1 publishes its real-time factors at 27 and 60 steps, on GPUs;
this CPU's figures are for scale only). ``small`` is opt-in (``--presets tiny,small``): minutes per row here.

Models are randomly initialised: speed does not depend on training. Runs on CUDA when available.

Runs with the allocator setting refrain-infer uses on a CPU (refrain/allocator.py; ``--system_allocator``
leaves glibc's default).

    .venv/bin/python bench/bench_sampler.py [--quick] [--threads N] [--system_allocator]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from refrain.allocator import keep_freed_memory
from refrain.bundles.dit import build_from_spec
from refrain.models.dit.conditioning import DiTConditioning
from refrain.sampling.options import SamplerOptions
from refrain.sampling.solvers import sample

ROOT = Path(__file__).resolve().parents[1]
# preset -> (DiT config, latent channels and frame rate of the VAE it pairs with, seconds, steps)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"config": "tiny", "channels": 16, "frame_rate": 44100 / 1024, "seconds": 30.0},
    "small": {"config": "small", "channels": 64, "frame_rate": 44100 / 2048, "seconds": 10.0},
}
STEPS = (30, 60)
OVERHEAD_TARGET = 0.01
SOLVERS = ("euler", "heun", "pingpong")
# ACE-Step v1's published real-time factors (its README: the 3.5 B model, one GPU, batch 1), printed beside
# this machine's rows for scale: (device, RTF at 27 steps, RTF at 60 steps)
ACE_STEP_V1_RTF = (
    ("NVIDIA RTX 4090", 34.48, 15.63),
    ("NVIDIA A100", 27.27, 12.27),
    ("NVIDIA RTX 3090", 12.76, 6.48),
    ("MacBook M2 Max", 2.27, 1.03),
)


class TimedModel:
    """Calls the model and adds the wall time of each forward pass (synchronised on CUDA) to ``seconds``."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        self.seconds, self.calls = 0.0, 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: DiTConditioning) -> Any:
        self._sync()
        start = time.perf_counter()
        out = self.model(x, sigma, cond)
        self._sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def prepare(self, cond: DiTConditioning) -> Any:
        """The model's once-per-run conditioning; its time counts as outside the network (overhead)."""
        return self.model.prepare(cond)


def build(preset: dict[str, Any], device: torch.device) -> torch.nn.Module:
    spec = yaml.safe_load((ROOT / "conf" / "model" / "dit" / f"{preset['config']}.yaml").read_text())
    spec["config"]["latent_channels"] = preset["channels"]  # the VAE it pairs with (the yaml reads a bundle)
    torch.manual_seed(0)
    return build_from_spec(spec).to(device).eval()


def conditioning(model: torch.nn.Module, frames: int, device: torch.device) -> DiTConditioning:
    g = torch.Generator().manual_seed(0)
    text_dim = model.config.text_dim
    lyrics = torch.randint(4, 60, (1, frames), generator=g)
    lyrics[:, frames // 2 :] = 0  # half the song sung, as with real lyrics
    return DiTConditioning(
        torch.randn(1, 24, text_dim, generator=g), torch.ones(1, 24, dtype=torch.bool), lyrics
    ).to(device)


def run_one(
    model: torch.nn.Module, preset: dict[str, Any], solver: str, device: torch.device
) -> dict[str, Any]:
    frames = round(preset["seconds"] * preset["frame_rate"])
    cond = conditioning(model, frames, device)
    options = SamplerOptions(steps=preset["steps"], solver=solver, guidance="apg", seed=0)
    timed = TimedModel(model, device)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn((1, preset["channels"], frames), generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        velocity = options.guided(timed, cond)
        latent = sample(velocity, noise, options.sigmas(), solver, generator=generator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    assert torch.isfinite(latent).all()
    return {
        "solver": solver,
        "steps": preset["steps"],
        "calls": timed.calls,
        "audio": preset["seconds"],
        "wall": wall,
        "rtf": preset["seconds"] / wall,
        "cpu_rtf": preset["seconds"] / cpu,
        "overhead": 1.0 - timed.seconds / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and seconds (a smoke run)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared machine)"
    )
    parser.add_argument("--presets", default="tiny", help=f"comma-separated: {', '.join(PRESETS)}")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="comma-separated step counts")
    parser.add_argument(
        "--system_allocator",
        action="store_true",
        help="leave glibc's trimming on (refrain-infer turns it off on CPU: refrain/allocator.py)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept = not args.system_allocator and keep_freed_memory()  # what refrain-infer does on the CPU
    step_counts = [int(n) for n in args.steps.split(",")]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {where}; torch {torch.__version__}; guidance APG 15, interval 0.5 (2 passes per guided step); "
        f"allocator: {'glibc keeps freed memory (refrain.allocator)' if kept else 'system default'}\n"
    )
    print(
        "| preset | params | solver | steps | model calls | audio s | wall s | RTF (audio s / wall s) "
        "| audio s / CPU s | overhead outside forward |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for name in args.presets.split(","):
        preset = PRESETS[name.strip()]
        if args.quick:
            preset, step_counts = {**preset, "seconds": 3.0}, [3]
        model = build(preset, device)
        params = sum(p.numel() for p in model.parameters())
        run_one(model, {**preset, "steps": 2}, "pingpong", device)  # warm-up at the measured length
        for steps, solver in ((n, solver) for n in step_counts for solver in SOLVERS):
            row = run_one(model, {**preset, "steps": steps}, solver, device)
            worst = max(worst, row["overhead"])
            print(
                f"| {name} | {params / 1e6:.1f} M | {solver} | {row['steps']} | {row['calls']} | {row['audio']:.0f} | "
                f"{row['wall']:.2f} | {row['rtf']:.2f} | {row['cpu_rtf']:.2f} | {100 * row['overhead']:.2f} % |",
                flush=True,
            )

    published = ", ".join(f"{card} {at27:.2f} / {at60:.2f}" for card, at27, at60 in ACE_STEP_V1_RTF)
    print(f"\nfor scale, ACE-Step v1's published RTF (3.5 B, one GPU, batch 1) at 27 / 60 steps: {published}")
    verdict = "met" if worst <= OVERHEAD_TARGET else "NOT met"
    print(
        f"\ntarget: time outside the network <= {100 * OVERHEAD_TARGET:.0f} % of the loop: worst row "
        f"{100 * worst:.2f} % ({verdict}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
