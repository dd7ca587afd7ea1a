"""Memory of one training step per model preset, next to the bytes the step must hold at the least.

For each preset (tiny/mid VAE, tiny/small DiT) and gradient checkpointing off/on, a fresh subprocess
builds the model from conf/ (Hydra, as training does), runs two full training steps on CPU (forward,
losses, backward, AdamW step; the VAE also its STFT discriminator, as VAETask does) and reports its peak
resident memory (``getrusage`` maxrss) and the growth over the memory held just before the first
step. The floor is what any step needs whatever the activations: fp32 parameters + gradients + AdamW's
two moments (+ the EMA copy both tasks keep), computed from the parameter count. The 1.1 B DiT
(``base_1b``) is only counted (built on the meta device): its CPU step would not fit this machine.
Where CUDA is present the same step is also measured on the GPU (``max_memory_allocated``).

    .venv/bin/python bench/bench_memory.py [--results results.jsonl]

With ``--results`` every measurement is appended to that file as it finishes and already measured
configurations are skipped, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

# preset -> (kind, batch, length): VAE lengths in samples, DiT lengths in latent frames.
PRESETS: dict[str, tuple[str, int, int]] = {
    "vae/tiny": ("vae", 1, 32768),
    "vae/mid": ("vae", 1, 32768),
    "dit/tiny": ("dit", 2, 256),
    "dit/small": ("dit", 1, 512),
}
ANALYTIC_ONLY = {"dit/base_1b": ("dit", 1, 2048)}
GB = 1024**3


def compose(preset: str) -> Any:
    """The training config with this model preset (and, for a VAE, the VAE task's losses)."""
    from refrain.config import compose_config

    group, name = preset.split("/")
    return compose_config([f"model/{group}={name}", *(["task=vae"] if group == "vae" else [])])


def build(preset: str, checkpointing: bool, device: str = "cpu") -> Any:
    from hydra.utils import instantiate

    cfg = compose(preset)
    node = cfg.model.vae if preset.startswith("vae") else cfg.model.dit
    if device == "meta":
        with torch.device("meta"):
            return instantiate(node, gradient_checkpointing=checkpointing)
    return instantiate(node, gradient_checkpointing=checkpointing).to(device)


def floor_bytes(parameters: int) -> dict[str, int]:
    """fp32 weights, gradients, AdamW exp_avg + exp_avg_sq, and the EMA copy."""
    return {"params": 4 * parameters, "grads": 4 * parameters, "adamw": 8 * parameters, "ema": 4 * parameters}


def rss_now() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def vae_step_factory(preset: str, model: Any, batch: int, length: int, device: str) -> tuple[Any, int]:
    """VAETask's step without Lightning: STFT + KL + adversarial + feature matching, then the critic."""
    from hydra.utils import instantiate

    from refrain.losses.adversarial import (
        discriminator_hinge_loss,
        feature_matching_loss,
        generator_hinge_loss,
    )

    cfg = compose(preset)
    discriminator = instantiate(cfg.task.discriminator).to(device)
    spectral = instantiate(cfg.task.spectral_loss).to(device)
    opt_g = torch.optim.AdamW(model.parameters(), lr=1e-4)
    opt_d = torch.optim.AdamW(discriminator.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    audio = (0.1 * torch.randn(batch, model.audio_channels, length, generator=generator)).to(device)

    def step() -> None:
        out = model(audio)
        real_logits, real_features = discriminator(audio)
        fake_logits, fake_features = discriminator(out.reconstruction)
        loss = (
            spectral(out.reconstruction, audio)["stft"]
            + 1e-4 * model.kl_loss(out.posterior)
            + 0.1 * generator_hinge_loss(fake_logits)["adv"]
        )
        loss = loss + 5.0 * feature_matching_loss(real_features, fake_features)["feature_matching"]
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        disc = discriminator_hinge_loss(real_logits, discriminator(out.reconstruction.detach())[0])["disc"]
        opt_d.zero_grad(set_to_none=True)
        disc.backward()
        opt_d.step()

    return step, sum(p.numel() for p in discriminator.parameters())


def dit_step_factory(preset: str, model: Any, batch: int, length: int, device: str) -> tuple[Any, int]:
    """DiTTask's step without Lightning or REPA: the flow-matching loss with CFG dropout and spans."""
    from refrain.losses.flow_matching import FlowMatchingLoss
    from refrain.models.dit.conditioning import DiTConditioning

    g = torch.Generator().manual_seed(0)
    node = compose(preset).model.dit
    text, speaker_dim = int(node.config.text_dim), node.config.speaker_dim
    x0 = torch.randn(batch, model.latent_channels, length, generator=g).to(device)
    cond = DiTConditioning(
        style=torch.randn(batch, 64, text, generator=g).to(device),
        style_mask=torch.ones(batch, 64, dtype=torch.bool, device=device),
        lyrics=torch.randint(1, 100, (batch, length), generator=g).to(device),
        speaker=torch.randn(batch, speaker_dim, generator=g).to(device) if speaker_dim else None,
    )
    loss_fn, optimizer = FlowMatchingLoss(), torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = loss_fn(model, x0, cond).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, 0


def measure(preset: str, checkpointing: bool, device: str) -> dict[str, Any]:
    """One preset in this (fresh) process: peak RSS (CPU) or peak allocated (CUDA) over two steps."""
    torch.manual_seed(0)
    kind, batch, length = PRESETS[preset]
    model = build(preset, checkpointing, device).train()
    factory = vae_step_factory if kind == "vae" else dit_step_factory
    step, extra_params = factory(preset, model, batch, length, device)
    parameters = sum(p.numel() for p in model.parameters()) + extra_params
    before = rss_now()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    for _ in range(2):  # the second step holds AdamW state and new gradients: the steady-state peak
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "preset": preset,
        "checkpointing": checkpointing,
        "device": device,
        "batch": batch,
        "length": length,
        "parameters": parameters,
        "peak": peak,
        "growth": peak - before,
    }


def run_child(preset: str, checkpointing: bool, device: str) -> dict[str, Any] | None:
    command = [sys.executable, __file__, "--measure", preset, str(int(checkpointing)), device]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        print(f"{preset} ckpt={checkpointing} {device}: failed\n{done.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def table(rows: list[dict[str, Any]], analytic: dict[str, int]) -> str:
    head = (
        "| preset | input (batch x length) | params | ckpt | peak | step growth | floor: params+grads+AdamW (+EMA) |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in rows:
        floor = floor_bytes(row["parameters"])
        base = floor["params"] + floor["grads"] + floor["adamw"]
        unit = "samples" if row["preset"].startswith("vae") else "frames"
        lines.append(
            f"| {row['preset']} ({row['device']}) | {row['batch']} x {row['length']} {unit} | "
            f"{row['parameters'] / 1e6:.2f} M | {'on' if row['checkpointing'] else 'off'} | "
            f"{row['peak'] / GB:.2f} GB | {row['growth'] / GB:.2f} GB | {base / GB:.3f} ({(base + floor['ema']) / GB:.3f}) GB |"
        )
    for preset, parameters in analytic.items():
        floor = floor_bytes(parameters)
        base = floor["params"] + floor["grads"] + floor["adamw"]
        lines.append(
            f"| {preset} (counted) | - | {parameters / 1e6:.0f} M | - | - | - | "
            f"{base / GB:.2f} ({(base + floor['ema']) / GB:.2f}) GB; /8 ranks under FSDP: "
            f"{base / 8 / GB:.2f} GB |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], bool(int(sys.argv[3])), sys.argv[4])), flush=True)
        return
    results = Path(sys.argv[sys.argv.index("--results") + 1]) if "--results" in sys.argv else None
    rows = (
        [json.loads(line) for line in results.read_text().splitlines()]
        if results and results.exists()
        else []
    )
    done = {(r["preset"], r["checkpointing"], r["device"]) for r in rows}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for preset in PRESETS:
            for checkpointing in (False, True):
                if (preset, checkpointing, device) in done:
                    continue
                row = run_child(preset, checkpointing, device)
                if row is None:
                    continue
                rows.append(row)
                if results:
                    with results.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
                print(f"measured {preset} ckpt={checkpointing} on {device}", file=sys.stderr, flush=True)
    analytic = {}
    for preset in ANALYTIC_ONLY:
        model = build(preset, True, "meta")
        analytic[preset] = sum(p.numel() for p in model.parameters())
    print(table(rows, analytic))
    print(
        "\npeak = ru_maxrss of a fresh process (includes ~0.4-0.6 GB of Python, torch and the model "
        "build); step growth = peak minus the resident memory just before the first step, i.e. "
        "gradients + AdamW state + activations; VAE rows count the STFT discriminator's parameters and state too."
    )


if __name__ == "__main__":
    main()
