"""The conditioning cache's speed-up for bench_dit.py --cache_speedup: one DiT training step reading the
cache against the same step computing everything online (audio decode of the crop, VAE posterior, REPA
teachers, style prompt) through ``refrain.data.conditioning_encoder.ConditioningEncoder``, the code that
fills the cache. What it measures: on ``tiny`` mostly the VAE encode and teachers against a 0.34 M DiT;
``small`` pairs a Stable-Audio-Open-sized VAE and teachers of MERT-v1-330M's and mHuBERT-147's shapes
(random weights cost the same FLOPs) with the 0.22 B DiT. The online path encodes only the crop (the
training fallback encodes whole songs), so the speed-up is a lower bound.
"""

from __future__ import annotations

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
    "tiny": Setup(
        "tiny",
        "tiny",
        4,
        256,
        {
            "mert": {"rate": 24000, "layer": 1, "chunk": 5.0, "normalize": True, **_hubert(32, 2, 16)},
            "mhubert": {"rate": 16000, "layer": -1, "chunk": 30.0, "normalize": False, **_hubert(32, 2, 16)},
        },
        64,
    ),
    "small": Setup(
        "small",
        "sao",
        1,
        128,
        {
            "mert": {"rate": 24000, "layer": 7, "chunk": 5.0, "normalize": True, **_hubert(1024, 24)},
            "mhubert": {"rate": 16000, "layer": -1, "chunk": 30.0, "normalize": False, **_hubert(768, 12)},
        },
        2048,
    ),
}


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
            name=name,
            checkpoint_dir=str(folder),
            sample_rate=cfg["rate"],
            layer=cfg["layer"],
            chunk_seconds=cfg["chunk"],
            normalize=cfg["normalize"],
            feature_dim=shape["hidden_size"],
        )
    return specs


def build(setup: Setup, root: Path) -> tuple[DiTTask, ConditioningEncoder]:
    cfg = compose_config([f"model/dit={setup.dit}", f"model/vae={setup.vae}"])
    torch.manual_seed(0)
    vae = instantiate(cfg.model.vae).eval()
    OmegaConf.update(cfg, "model.dit.config.latent_channels", vae.latent_channels)
    model = instantiate(cfg.model.dit, gradient_checkpointing=False)
    specs = make_teachers(setup, root)
    task = DiTTask(
        model,
        loss=FlowMatchingLoss(shift=3.0),
        optimizer=partial(torch.optim.AdamW, lr=1e-4, fused=True),
        repa=partial(REPALoss, teachers=specs, projector_dim=setup.projector_dim),
        ema=partial(EMA, decay=0.9999),
    )
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


def measure_cache(name: str, steps: int) -> dict[str, Any]:
    setup = SETUPS[name]
    with tempfile.TemporaryDirectory() as tmp:
        task, encoder = build(setup, Path(tmp))
        optimizer = task.configure_optimizers()
        timings = dict.fromkeys(("audio decode", "VAE encode", "teachers", "text encoder"), 0.0)
        cached = online_batch(encoder, setup, dict(timings))  # the batch a cache read would return
        train_step(task, optimizer, cached)  # warm-up (allocations, lazy init)
        cache_step = timed(lambda: train_step(task, optimizer, cached), steps)
        online_step = timed(lambda: train_step(task, optimizer, online_batch(encoder, setup, timings)), steps)
    params = sum(p.numel() for p in task.model.parameters())
    return {
        "preset": name,
        "params": params,
        "batch": f"{setup.batch} x {setup.frames}",
        "cache_ms": 1e3 * cache_step,
        "online_ms": 1e3 * online_step,
        "speedup": online_step / cache_step,
        "breakdown": {k: 1e3 * v / steps for k, v in timings.items()},  # mean per online step
    }
