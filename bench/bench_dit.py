"""DiT training speed on this machine, measured in one run, printed as a markdown table.

For each DiT preset (conf/model/dit/<preset>.yaml) one real training step of ``DiTTask`` (posterior
sample, flow matching with CFG dropout and masked spans, REPA on every teacher, backward, AdamW, EMA):

- training tokens (latent frames) per second;
- model FLOPs per step, counted by ``torch.utils.flop_counter.FlopCounterMode`` over forward + backward,
  divided by the step time, as a fraction of the GEMM peak this bench measures with ``torch.matmul``;
- the speed-up of training from the conditioning cache over computing everything online every step on the
  same model and batch: decoding the crop's audio, VAE posterior, REPA teacher features and the style
  prompt embedding, through the same ``refrain.data.conditioning_encoder.ConditioningEncoder`` code that
  fills the cache. The online baseline encodes only the crop (the training fallback encodes whole songs),
  so the speed-up printed is a lower bound.

Encoders per preset: ``tiny`` pairs with the tiny VAE and two tiny random HuBERT teachers (the demo);
``small`` with a Stable-Audio-Open-sized VAE and random teachers of MERT-v1-330M's and mHuBERT-147's
shapes (random weights cost the same FLOPs as trained ones). The text encoder is the bundled MiniLM.

    python bench/bench_dit.py [--presets tiny,small] [--steps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from refrain.audio.io import load_audio
from refrain.config import compose_config
from refrain.data.conditioning_encoder import ConditioningEncoder
from refrain.data.embedded import embedded_tracks_dir
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.losses.repa import REPALoss
from refrain.models.teachers import TeacherSpec, load_teachers
from refrain.models.text_encoder import TextEncoder
from refrain.tasks.dit_task import DiTTask
from refrain.training.ema import EMA


@dataclass(frozen=True)
class Setup:
    """A preset and the encoders/batch it is measured with."""

    dit: str  # conf/model/dit option
    vae: str  # conf/model/vae option (random weights: only the shape matters for speed)
    batch: int
    frames: int
    teachers: dict[str, dict[str, Any]]  # name -> HubertConfig kwargs + rate/layer/chunk
    projector_dim: int


def _hubert(hidden: int, layers: int, conv: int = 512) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "intermediate_size": 4 * hidden,
        "conv_dim": (conv,) * 7,
    }


SETUPS = {
    "tiny": Setup("tiny", "tiny", 4, 256, {
        "mert": {"rate": 24000, "layer": 1, "chunk": 5.0, "normalize": True, **_hubert(32, 2, 16)},
        "mhubert": {"rate": 16000, "layer": -1, "chunk": 30.0, "normalize": False, **_hubert(32, 2, 16)},
    }, 64),
    "small": Setup("small", "sao", 1, 128, {
        "mert": {"rate": 24000, "layer": 7, "chunk": 5.0, "normalize": True, **_hubert(1024, 24)},
        "mhubert": {"rate": 16000, "layer": -1, "chunk": 30.0, "normalize": False, **_hubert(768, 12)},
    }, 2048),
}  # fmt: skip


def gemm_peak(sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5) -> float:
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


def timed(fn: Any, steps: int) -> float:
    """Median wall time of ``steps`` calls (robust to a neighbour's burst on a shared machine)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_teachers(setup: Setup, root: Path) -> dict[str, TeacherSpec]:
    """Random HuBERT checkpoints of the configured shapes, saved and loaded through the real path."""
    from transformers import HubertConfig, HubertModel

    specs = {}
    for name, cfg in setup.teachers.items():
        folder = root / name
        shape = {k: v for k, v in cfg.items() if k not in ("rate", "layer", "chunk", "normalize")}
        torch.manual_seed(0)
        HubertModel(HubertConfig(**shape)).save_pretrained(folder)
        specs[name] = TeacherSpec(
            name=name, checkpoint_dir=str(folder), sample_rate=cfg["rate"], layer=cfg["layer"],
            chunk_seconds=cfg["chunk"], normalize=cfg["normalize"], feature_dim=shape["hidden_size"],
        )  # fmt: skip
    return specs


def build(setup: Setup, root: Path) -> tuple[DiTTask, ConditioningEncoder]:
    cfg = compose_config([f"model/dit={setup.dit}", f"model/vae={setup.vae}"])
    torch.manual_seed(0)
    vae = instantiate(cfg.model.vae).eval()
    OmegaConf.update(cfg, "model.dit.config.latent_channels", vae.latent_channels)
    model = instantiate(cfg.model.dit, gradient_checkpointing=False)
    specs = make_teachers(setup, root)
    task = DiTTask(
        model, loss=FlowMatchingLoss(shift=3.0), optimizer=partial(torch.optim.AdamW, lr=1e-4),
        repa=partial(REPALoss, teachers=specs, projector_dim=setup.projector_dim), ema=partial(EMA, decay=0.9999),
    )  # fmt: skip
    encoder = ConditioningEncoder(vae, TextEncoder(), load_teachers(specs), fingerprint="bench")
    return task, encoder


def crop_audio(encoder: ConditioningEncoder, setup: Setup, index: int) -> torch.Tensor:
    """Decode one crop of an embedded track at the VAE rate (what the online path must do every step)."""
    tracks = sorted(embedded_tracks_dir().rglob("*.opus"))
    seconds = setup.frames * encoder.vae.hop_length / encoder.sample_rate
    loaded = load_audio(tracks[index % len(tracks)], encoder.sample_rate, 2, 2.0, seconds)
    audio = torch.from_numpy(loaded.samples)
    need = setup.frames * encoder.vae.hop_length
    return torch.nn.functional.pad(audio, (0, max(0, need - audio.shape[-1])))[:, :need]


PROMPTS = ["calm acoustic guitar, 68 bpm, C major", "upbeat synth pop, female vocals, 120 bpm"]


def online_batch(encoder: ConditioningEncoder, setup: Setup, timings: dict[str, float]) -> dict[str, Any]:
    """Everything the cache stores, computed now for one batch, with per-stage wall times added up."""
    items = []
    for i in range(setup.batch):
        start = time.perf_counter()
        audio = crop_audio(encoder, setup, i)
        timings["audio decode"] += time.perf_counter() - start
        start = time.perf_counter()
        posterior = encoder.vae.encode_chunked(audio[None], output_device="cpu")
        timings["VAE encode"] += time.perf_counter() - start
        start = time.perf_counter()
        feats = {n: encoder.teachers[n](audio[None], encoder.sample_rate)[0] for n in encoder.teacher_names}
        timings["teachers"] += time.perf_counter() - start
        start = time.perf_counter()
        style, style_mask = encoder.encode_prompts([PROMPTS[i % len(PROMPTS)]])
        timings["text encoder"] += time.perf_counter() - start
        items.append((posterior.mean[0], posterior.std[0], feats, style[0], style_mask[0]))
    return collate(items, setup.frames)


def collate(items: list[Any], frames: int) -> dict[str, Any]:
    style_len = max(item[3].shape[0] for item in items)
    pad = [torch.nn.functional.pad(item[3], (0, 0, 0, style_len - item[3].shape[0])) for item in items]
    masks = [torch.nn.functional.pad(item[4], (0, style_len - item[4].shape[0])) for item in items]
    b = len(items)
    return {
        "latent_mean": torch.stack([item[0][:, :frames] for item in items]),
        "latent_std": torch.stack([item[1][:, :frames] for item in items]),
        "frame_mask": torch.ones(b, frames, dtype=torch.bool),
        "lyrics": torch.randint(1, 200, (b, frames), generator=torch.Generator().manual_seed(0)),
        "style": torch.stack(pad),
        "style_mask": torch.stack(masks).bool(),
        "teacher_features": {n: torch.stack([item[2][n] for item in items]) for n in items[0][2]},
        "teacher_masks": {},
    }


def train_step(task: DiTTask, optimizer: torch.optim.Optimizer, batch: dict[str, Any]) -> None:
    """What Lightning runs per optimiser step, minus logging: loss, backward, clip, AdamW, EMA."""
    loss = task.compute_loss(batch)["loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(task.model.parameters(), 0.5)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    task.ema.update(task.model)


def measure(name: str, steps: int) -> dict[str, Any]:
    setup = SETUPS[name]
    with tempfile.TemporaryDirectory() as tmp:
        task, encoder = build(setup, Path(tmp))
        optimizer = task.configure_optimizers()
        timings = dict.fromkeys(("audio decode", "VAE encode", "teachers", "text encoder"), 0.0)
        cached = online_batch(encoder, setup, dict(timings))  # the batch a cache read would return
        train_step(task, optimizer, cached)  # warm-up (allocations, lazy init)
        with FlopCounterMode(display=False) as counter:
            task.compute_loss(cached)["loss"].backward()
        optimizer.zero_grad(set_to_none=True)
        flops = counter.get_total_flops()
        cache_step = timed(lambda: train_step(task, optimizer, cached), steps)
        online_step = timed(lambda: train_step(task, optimizer, online_batch(encoder, setup, timings)), steps)
    params = sum(p.numel() for p in task.model.parameters())
    tokens = setup.batch * setup.frames
    return {
        "preset": name, "params": params, "batch": f"{setup.batch} x {setup.frames}", "cache_ms": 1e3 * cache_step,
        "tokens_s": tokens / cache_step, "gflop_step": flops / 1e9, "gflop_s": flops / cache_step / 1e9,
        "online_ms": 1e3 * online_step, "speedup": online_step / cache_step,
        "breakdown": {k: 1e3 * v / steps for k, v in timings.items()},  # mean per online step
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small", help=f"comma-separated: {', '.join(SETUPS)}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per path and preset")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = [gemm_peak()]
    rows = []
    for name in (n.strip() for n in args.presets.split(",") if n.strip()):
        rows.append(measure(name, args.steps))
        peaks.append(gemm_peak())  # measured around every preset: the best rate seen is the peak
    peak = max(peaks)
    print(f"\nDiT training on CPU, {torch.get_num_threads()} threads, float32; measured GEMM peak "
          f"(best torch.matmul, 1024^3 to 3072^3) {peak / 1e9:.1f} GFLOP/s\n")  # fmt: skip
    print("| preset | DiT params | batch (B x frames) | step from cache | tokens/s | GFLOP/step "
          "| GFLOP/s | of GEMM peak | step computing online | cache speed-up |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['params'] / 1e6:.2f} M | {r['batch']} | {r['cache_ms']:.0f} ms "
              f"| {r['tokens_s']:.0f} | {r['gflop_step']:.1f} | {r['gflop_s']:.1f} | {100 * r['gflop_s'] * 1e9 / peak:.1f} % "
              f"| {r['online_ms']:.0f} ms | {r['speedup']:.1f}x |")  # fmt: skip
    print("\nOnline path per step (ms): " + "; ".join(
        f"{r['preset']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["breakdown"].items()) for r in rows
    ))  # fmt: skip


if __name__ == "__main__":
    main()
