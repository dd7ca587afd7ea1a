"""Every GPU check in one command, within 8 minutes: the gpu-marked tests, then the GPU figures.

1. ``pytest -m gpu tests/``: bf16-mixed training, DDP and FSDP on the 223 M ``small`` DiT preset against
   one GPU, FSDP stop-and-resume, and every other gpu-marked test of the suite; the lines they print
   (loss agreement, run times) are repeated here.
2. One bf16-mixed training step of the ``small`` preset (flow matching with masked spans and CFG dropout,
   backward, AdamW) on the first GPU, gradient checkpointing off and on: latent frames per second and
   peak GPU memory.
3. ``bench/bench_sampler.py --quick``: the sampler's real-time factor per solver on the GPU.

Without CUDA it prints why and exits with status 2 (nothing is skipped silently).

    .venv/bin/python bench/bench_gpu.py [--budget_s 480]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FIGURE_MARKERS = ("|dloss|", "start-up in", "PASSED", "FAILED", "ERROR", "passed", "failed", "skipped")


def run(command: list[str], seconds: float) -> tuple[int, str]:
    """Run ``command`` from the repository root; (status, output); status 124 when it ran out of time."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(1.0, seconds), check=False
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or ""
        return 124, out if isinstance(out, str) else out.decode(errors="replace")
    return done.returncode, done.stdout + done.stderr


def small_step(
    checkpointing: bool,
    preset: str = "small",
    device: str = "cuda",
    frames: int = 1024,
    batch: int = 4,
    steps: int = 5,
) -> dict[str, float]:
    """Time a bf16-mixed training step of a DiT preset (built from conf/, as training does) on ``device``."""
    from hydra.utils import instantiate

    from refrain.config import compose_config
    from refrain.losses.flow_matching import FlowMatchingLoss
    from refrain.tasks.dit_task import DiTTask

    torch.manual_seed(0)
    flag = str(checkpointing).lower()
    cfg = compose_config([f"model/dit={preset}", f"model.dit.gradient_checkpointing={flag}"])
    model = instantiate(cfg.model.dit)
    on_gpu = device.startswith("cuda")
    task = DiTTask(model, loss=FlowMatchingLoss()).to(device)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    channels = model.latent_channels
    batch_data = {
        "latent_mean": torch.randn(batch, channels, frames, device=device),
        "latent_std": torch.full((batch, channels, frames), 0.05, device=device),
        "frame_mask": torch.ones(batch, frames, dtype=torch.bool, device=device),
        "lyrics": torch.randint(1, 100, (batch, frames), device=device),
        "style": torch.randn(batch, 64, 384, device=device),
        "style_mask": torch.ones(batch, 64, dtype=torch.bool, device=device),
    }

    def step() -> None:
        with torch.autocast("cuda" if on_gpu else "cpu", dtype=torch.bfloat16):
            loss = task.compute_loss(batch_data)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: kernels, allocator
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    return {
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_s": seconds,
        "frames_per_s": batch * frames / seconds,
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--budget_s", type=float, default=480.0, help="total wall-clock budget (default 8 min)"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device visible (torch.cuda.is_available() is False): nothing was run.")
        print(
            "Run it on a machine with an NVIDIA GPU; on CPU the distributed checks are tests/test_distributed.py."
        )
        raise SystemExit(2)
    deadline = time.time() + args.budget_s
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    print(
        f"GPUs: {torch.cuda.device_count()} ({names}); torch {torch.__version__}; budget {args.budget_s:.0f} s\n"
    )
    failures = []

    print("== 1. gpu-marked tests")
    status, output = run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-s", "-p", "no:cacheprovider", "-rA", "tests"],
        deadline - time.time() - 90,  # keep 90 s for the figures below
    )
    lines = [line for line in output.splitlines() if any(marker in line for marker in FIGURE_MARKERS)]
    print("\n".join(lines[-40:]) or output[-3000:])
    if status != 0:
        failures.append(f"gpu tests (status {status}{', out of time' if status == 124 else ''})")
        print(output[-4000:])

    print("\n== 2. bf16-mixed training step, small preset, cuda:0")
    print("| gradient checkpointing | parameters | s/step | latent frames/s | peak GPU memory |")
    print("|---|---|---|---|---|")
    for checkpointing in (False, True):
        if time.time() > deadline - 45:
            failures.append("step figures (out of time)")
            break
        try:
            row = small_step(checkpointing)
        except torch.cuda.OutOfMemoryError as error:
            failures.append(f"small step, checkpointing={checkpointing}: {error}")
            continue
        print(
            f"| {'on' if checkpointing else 'off'} | {row['parameters_m']:.0f} M | {row['step_s']:.3f} | "
            f"{row['frames_per_s']:,.0f} | {row['peak_gb']:.2f} GB |"
        )
        torch.cuda.empty_cache()

    print("\n== 3. sampler on the GPU (bench/bench_sampler.py --quick)")
    status, output = run(
        [sys.executable, str(REPO / "bench" / "bench_sampler.py"), "--quick"], deadline - time.time()
    )
    print(output[-3000:])
    if status != 0:
        failures.append(f"bench_sampler (status {status})")

    spent = args.budget_s - (deadline - time.time())
    print(
        f"\nbench_gpu: {spent:.0f} s of {args.budget_s:.0f} s; "
        + ("FAILED: " + "; ".join(failures) if failures else "all passed")
    )
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
