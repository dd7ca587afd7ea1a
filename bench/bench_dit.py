"""DiT training speed on this machine against its own GEMM peak and a LLaMA block stack, in one run.

Per size, one real ``DiTTask`` step on a fixed batch (posterior sample, flow matching with CFG
dropout and masked spans; no REPA teachers), split in two timed phases:

- DiT-only forward + backward (``compute_loss`` + ``backward``): its FLOPs, counted over forward and
  backward with attention and grouped-conv backward included (bench/dit_flops.py), divided by its time,
  as a fraction of the float32 GEMM peak measured here with ``torch.matmul``. The table divides the
  median step by the best probe of the run; the targets line divides each step by a probe taken right
  after it (median over the steps), since this shared machine's speed drifts by 10-20 % over minutes and
  a best-of-run probe set against a median step counts the drift as the DiT's loss;
- clip + fused AdamW + EMA: the rest of the step, reported separately, and the whole step's ratio.

Beside it, the reference: a stack of transformers' ``LlamaDecoderLayer`` (DiffRhythm's DiT block) at the
same hidden size, heads, FFN width, depth, batch and tokens, forward + backward, timed interleaved with
the DiT (A B A B ...) so a neighbour's burst hits both; printed as a time ratio and a per-FLOP throughput
ratio (refrain's FLOP/s over the reference's; the table from the median times, the targets line from the
median of the per-pair ratios, in wall and in thread CPU time). The DiT does more work per block (style
cross-attention, adaLN), so equal time is not the target; equal or better FLOP/s is.

Both sides run in one process with the allocator setting refrain's CPU runs use (refrain/allocator.py:
glibc keeps freed memory instead of re-faulting it every step; ``--system_allocator`` leaves it off).
The loss draws no CFG drops here, so every timed step does the work whose FLOPs were counted.

Sizes: ``tiny`` (the demo preset, 4 x 256 frames), ``realistic`` (hidden 512, 8 heads, 4 blocks,
1 x 1,024 frames), ``small`` (the 0.22 B preset at 1 x 1,024 frames; slow on a CPU, opt-in).
One thread by default: on a shared machine two threads under load collapse the step but not the probe.
``--cache_speedup tiny,small`` adds the conditioning cache's speed-up (bench/dit_online.py).
``--torch_compile`` compiles the DiT's blocks and times the same DiT eager beside it (interleaved, the
eager step before and after the compiled one in turn): the compile speed-up and the loss gap to eager.

    python bench/bench_dit.py [--sizes tiny,realistic] [--steps 10] [--threads 1] [--cache_speedup tiny] [--torch_compile]
        [--style_cross_attention false] [--patch_size 2] [--system_allocator]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from dit_flops import LlamaStack, count_flops, llama_step  # noqa: E402  (bench/ is the script's folder)
from hydra.utils import instantiate
from omegaconf import OmegaConf

from refrain.allocator import keep_freed_memory
from refrain.config import compose_config
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.tasks.dit_task import DiTTask
from refrain.training.ema import EMA


@dataclass(frozen=True)
class Size:
    preset: str  # conf/model/dit option
    batch: int
    frames: int
    config: dict[str, Any] = field(default_factory=dict)  # DiTConfig overrides


SIZES = {
    "tiny": Size("tiny", 4, 256, {"latent_channels": 16}),
    "realistic": Size(
        "small",
        1,
        1024,
        {
            "latent_channels": 64,
            "hidden_size": 512,
            "num_heads": 8,
            "num_layers": 4,
            "intermediate_size": 1536,
            "repa_layer": 2,
            "speaker_dim": None,
        },
    ),
    "small": Size("small", 1, 1024, {"latent_channels": 64, "speaker_dim": None}),
}
TARGETS = {"dit_only": 0.85, "whole_step": 0.75, "per_flop_vs_llama": 1.0}


def gemm_peak(sizes: tuple[int, ...] = (1024, 2048), repeats: int = 5) -> float:
    """Best measured float32 torch.matmul rate on this CPU over a few square sizes, in FLOP/s."""
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.matmul(a, b)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = max(best, 2.0 * size**3 / (time.perf_counter() - start))
    return best


def build(size: Size) -> tuple[DiTTask, torch.optim.Optimizer, dict[str, Any]]:
    cfg = compose_config([f"model/dit={size.preset}"])
    for key, value in size.config.items():
        OmegaConf.update(cfg, f"model.dit.config.{key}", value)
    torch.manual_seed(0)
    model = instantiate(cfg.model.dit, gradient_checkpointing=False)
    task = DiTTask(
        model,
        # no CFG drops: every timed step does the work the FLOP counter counted once (a dropped lyric
        # or style row skips its encoder, so a random drop made some timed steps cheaper than counted)
        loss=FlowMatchingLoss(shift=3.0, drop_style_prob=0.0, drop_lyrics_prob=0.0, drop_context_prob=0.0),
        optimizer=partial(torch.optim.AdamW, lr=1e-4, fused=True),
        ema=partial(EMA, decay=0.9999),
    )
    g = torch.Generator().manual_seed(0)
    b, t, c = size.batch, size.frames, model.latent_channels
    text_dim = model.config.text_dim
    batch = {
        "latent_mean": torch.randn(b, c, t, generator=g),
        "latent_std": torch.full((b, c, t), 0.1),
        "frame_mask": torch.ones(b, t, dtype=torch.bool),
        "lyrics": torch.randint(1, 200, (b, t), generator=g),
        "style": torch.randn(b, 24, text_dim, generator=g),
        "style_mask": torch.ones(b, 24, dtype=torch.bool),
    }
    return task, task.configure_optimizers(), batch


def dit_phases(
    task: DiTTask, optimizer: torch.optim.Optimizer, batch: dict[str, Any]
) -> tuple[float, float, float]:
    """(forward + backward seconds, clip + optimizer + EMA seconds, forward + backward CPU seconds of this
    thread) of one training step."""
    start, cpu_start = time.perf_counter(), time.thread_time()
    task.compute_loss(batch)["loss"].backward()
    middle, cpu = time.perf_counter(), time.thread_time() - cpu_start
    torch.nn.utils.clip_grad_norm_(task.model.parameters(), 0.5)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    task.ema.update(task.model)
    return middle - start, time.perf_counter() - middle, cpu


def measure(name: str, steps: int, warmup: int = 2, compile_blocks: bool = False) -> dict[str, Any]:
    size = SIZES[name]
    task, optimizer, batch = build(size)
    # FLOPs counted eager, before any compile: a dispatch mode around compiled blocks makes dynamo recompile
    # them in pieces, and the timed steps then ran 5-10 % slower than an undisturbed compiled DiT
    dit_flops, dit_attention = count_flops(lambda: task.compute_loss(batch)["loss"].backward())
    optimizer.zero_grad(set_to_none=True)
    eager: tuple[DiTTask, torch.optim.Optimizer] | None = None
    loss_gap = float("nan")
    if compile_blocks:  # --torch_compile: the same helper training and sampling use; compiles here
        from refrain.models.compile import compile_blocks as compile_model

        eager = build(size)[:2]  # the same DiT left eager, timed beside the compiled one
        note = compile_model(task.model)
        if note:
            print(f"note: {note}")
        losses = []  # the compiled blocks against eager: same weights (no step yet), batch and draws
        for side in (task, eager[0]):
            torch.manual_seed(0)  # with grad on, as the timed steps run (no_grad would recompile)
            losses.append(side.compute_loss(batch)["loss"].detach())
        loss_gap = float((losses[0] - losses[1]).abs())
    cfg = task.model.config
    ff = cfg.intermediate_size or 256 * ((int(8 * cfg.hidden_size / 3) + 255) // 256)
    stack = LlamaStack(cfg.hidden_size, cfg.num_heads, ff, cfg.num_layers)
    tokens = -(-size.frames // cfg.patch_size)  # the DiT's sequence: patch_size latent frames per token
    reference = llama_step(stack, size.batch, tokens, cfg.hidden_size)
    for _ in range(warmup):
        dit_phases(task, optimizer, batch)
        reference()
        if eager is not None:
            dit_phases(*eager, batch)
    ref_flops, _ = count_flops(reference)
    fwd_bwd, rest, ref, cpu_ratio, wall_ratio, eager_fwd_bwd = [], [], [], [], [], []
    paired: list[tuple[float, float]] = []  # (DiT-only, whole step) rate over the probe after it
    for step in range(steps):  # A B A B: a neighbour's burst slows both sides alike
        if eager is not None and step % 2 == 0:  # eager before and after the compiled DiT in turn
            eager_fwd_bwd.append(dit_phases(*eager, batch)[0])
        a, o, cpu = dit_phases(task, optimizer, batch)
        probe = gemm_peak((1024,), repeats=3)  # the GEMM rate of this moment: the machine's speed drifts
        paired.append((dit_flops / a / probe, dit_flops / (a + o) / probe))
        if eager is not None and step % 2 == 1:
            eager_fwd_bwd.append(dit_phases(*eager, batch)[0])
        fwd_bwd.append(a)
        rest.append(o)
        start, cpu_start = time.perf_counter(), time.thread_time()
        reference()
        ref.append(time.perf_counter() - start)
        cpu_ratio.append((time.thread_time() - cpu_start) / cpu)  # per pair: CPU time is blind to preemption
        wall_ratio.append(ref[-1] / a)  # per pair: the drift of the machine's speed cancels within it
    t_dit, t_rest, t_ref = (statistics.median(v) for v in (fwd_bwd, rest, ref))
    return {
        "size": name,
        "params": sum(p.numel() for p in task.model.parameters()),
        "ref_params": sum(p.numel() for p in stack.parameters()),
        "shape": f"{size.batch} x {size.frames}"
        + (f" (tokens of {cfg.patch_size})" if cfg.patch_size > 1 else ""),
        "dims": f"d {cfg.hidden_size}, {cfg.num_heads} heads, FFN {ff}, {cfg.num_layers} blocks",
        "flops": dit_flops,
        "attention": dit_attention,
        "ref_flops": ref_flops,
        "t_dit": t_dit,
        "t_rest": t_rest,
        "t_ref": t_ref,
        "cpu_time_ratio": statistics.median(cpu_ratio),  # reference CPU time / DiT CPU time
        "wall_time_ratio": statistics.median(wall_ratio),  # reference time / DiT time, per pair
        "tokens": size.batch * tokens,
        "hidden": cfg.hidden_size,
        "compiled": compile_blocks,
        "t_eager": statistics.median(eager_fwd_bwd) if eager_fwd_bwd else None,
        "loss_gap": loss_gap,
        "paired_dit_only": statistics.median(p[0] for p in paired),
        "paired_whole_step": statistics.median(p[1] for p in paired),
        "xattn": cfg.style_cross_attention,
    }


def report(rows: list[dict[str, Any]], peak: float, steps: int) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nDiT training step on CPU, {torch.get_num_threads()} thread(s), float32, median of {steps} steps "
        f"{'(DiT blocks torch.compiled) ' if rows and rows[0].get('compiled') else ''}"
        f"{'(style_cross_attention false) ' if rows and not rows[0]['xattn'] else ''}"
        f"after warm-up; load average {load:.1f} on {os.cpu_count()} cores; GEMM peak {peak / 1e9:.1f} GFLOP/s\n"
    )
    print(
        "| size | DiT params | dims | batch | GFLOP/step (attention) | DiT fwd+bwd | of GEMM peak "
        "| clip+AdamW+EMA | whole step | of GEMM peak | tokens/s | LLaMA stack fwd+bwd | time ratio "
        "| FLOP/s ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        whole = r["t_dit"] + r["t_rest"]
        per_flop = (r["flops"] / r["t_dit"]) / (r["ref_flops"] / r["t_ref"])
        print(
            f"| {r['size']} | {r['params'] / 1e6:.2f} M | {r['dims']} | {r['shape']} "
            f"| {r['flops'] / 1e9:.2f} ({r['attention'] / 1e9:.2f}) | {1e3 * r['t_dit']:.0f} ms "
            f"| {r['flops'] / r['t_dit'] / peak:.2f} | {1e3 * r['t_rest']:.0f} ms | {1e3 * whole:.0f} ms "
            f"| {r['flops'] / whole / peak:.2f} | {r['tokens'] / whole:.0f} | {1e3 * r['t_ref']:.0f} ms "
            f"({r['ref_flops'] / 1e9:.2f} GFLOP) | {r['t_dit'] / r['t_ref']:.2f} | {per_flop:.2f} |"
        )
    big = [r for r in rows if r["tokens"] >= 1024 and r["hidden"] >= 512]  # the targets' realistic size
    for r in big:
        whole = r["t_dit"] + r["t_rest"]
        checks = {  # against the GEMM probe taken right after each step (median over steps)
            "dit_only": r["paired_dit_only"],
            "whole_step": r["paired_whole_step"],
            "per_flop_vs_llama": r["flops"] / r["ref_flops"] * r["wall_time_ratio"],  # median over pairs
        }
        print(
            f"\ntargets at {r['size']} ({r['tokens']} tokens): "
            + "; ".join(
                f"{k} {v:.3f} (target >= {TARGETS[k]:.2f}: {'met' if v >= TARGETS[k] else 'NOT met'})"
                for k, v in checks.items()
            )
            + f"; per_flop_vs_llama in thread CPU time {r['flops'] / r['ref_flops'] * r['cpu_time_ratio']:.3f}"
            + f"; against the run's best GEMM probe (the table): dit_only {r['flops'] / r['t_dit'] / peak:.3f}, "
            f"whole_step {r['flops'] / whole / peak:.3f}"
        )
    for r in rows:
        if r.get("t_eager") is not None:
            print(
                f"torch.compile at {r['size']}: the same DiT eager {1e3 * r['t_eager']:.0f} ms against compiled "
                f"{1e3 * r['t_dit']:.0f} ms fwd+bwd (interleaved): {r['t_eager'] / r['t_dit']:.2f}x; "
                f"|loss eager - compiled| {r['loss_gap']:.1e} (same weights, batch and draws)"
            )
    print(
        "sampler targets (overhead outside the network <= 1%, real-time factor at 30 and 60 steps): "
        "python bench/bench_sampler.py"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,realistic", help=f"comma-separated: {', '.join(SIZES)}")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per size (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--cache_speedup", default="", help="also measure the cache speed-up: tiny,small")
    parser.add_argument("--torch_compile", action="store_true", help="torch.compile the DiT's blocks first")
    parser.add_argument(
        "--style_cross_attention",
        default="true",
        choices=("true", "false"),
        help="DiTConfig switch for every size",
    )
    parser.add_argument(
        "--patch_size",
        type=int,
        default=1,
        help="DiTConfig.patch_size (latent frames per token) for every size",
    )
    parser.add_argument(
        "--system_allocator",
        action="store_true",
        help="leave glibc's trimming on (refrain's CPU runs turn it off: refrain/allocator.py)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept = not args.system_allocator and keep_freed_memory()  # both sides of A B A B, as a refrain run
    print(f"allocator: {'glibc keeps freed memory (refrain.allocator)' if kept else 'system default'}")
    peaks = [gemm_peak()]
    rows = []
    xattn = args.style_cross_attention == "true"
    for name in (n.strip() for n in args.sizes.split(",") if n.strip()):
        switches = {"style_cross_attention": xattn, "patch_size": args.patch_size}
        SIZES[name] = replace(SIZES[name], config={**SIZES[name].config, **switches})
        rows.append(measure(name, args.steps, compile_blocks=args.torch_compile))
        peaks.append(gemm_peak())  # measured around every size: the best rate seen is the peak
    report(rows, max(peaks), args.steps)
    if args.cache_speedup:
        from dit_online import measure_cache

        print("\n| preset | DiT params | batch | step from cache | step computing online | cache speed-up |")
        print("|---|---|---|---|---|---|")
        for name in args.cache_speedup.split(","):
            r = measure_cache(name.strip(), max(3, args.steps // 3))
            print(
                f"| {r['preset']} | {r['params'] / 1e6:.2f} M | {r['batch']} | {r['cache_ms']:.0f} ms "
                f"| {r['online_ms']:.0f} ms | {r['speedup']:.1f}x |  online per step (ms): "
                + ", ".join(f"{k} {v:.0f}" for k, v in r["breakdown"].items())
            )


if __name__ == "__main__":
    main()
