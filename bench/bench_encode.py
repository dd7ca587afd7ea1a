"""`refrain-encode`'s VAE pass on this machine: eager against ``--torch_compile``, side by side in one run.

The demo VAE (``model/vae=demo``, random weights: the speed does not depend on them) encodes one song with
``encode_chunked`` exactly as ``refrain-encode`` does (2 s chunks, 0.5 s crossfaded overlap), once eager and
once with its Snake activations compiled (refrain/models/compile.py), alternating E C E C so drift on a shared
machine hits both. Printed: the compile time (first call, a short clip), each run's seconds, the medians'
speed-up and the largest difference between the two posteriors' means.

    python bench/bench_encode.py [--seconds 30] [--repeats 4] [--threads 2] [--vae demo]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from hydra.utils import instantiate

from refrain.config import compose_config
from refrain.models.compile import compile_blocks


def build(preset: str) -> torch.nn.Module:
    cfg = compose_config([f"model/vae={preset}"])
    return instantiate(cfg.model.vae).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the song encoded")
    parser.add_argument("--repeats", type=int, default=4, help="timed encodes per side")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--vae", default="demo", help="conf/model/vae option")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    eager, compiled = build(args.vae), build(args.vae)
    compiled.load_state_dict(eager.state_dict())  # the same weights: the latents must agree
    rate = eager.sample_rate
    song = torch.randn(
        1, eager.audio_channels, int(args.seconds * rate), generator=torch.Generator().manual_seed(0)
    )
    song = eager.pad_to_hop(song * 0.1)
    with torch.no_grad():
        eager.encode_chunked(song[..., : 7 * rate])
        start = time.perf_counter()
        note = compile_blocks(compiled)
        compiled.encode_chunked(song[..., : 7 * rate])
        print(note or f"compile + first 7 s encode: {time.perf_counter() - start:.1f} s")
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for name, vae in (("eager", eager), ("compiled", compiled)):
                start = time.perf_counter()
                vae.encode_chunked(song)
                times[name].append(time.perf_counter() - start)
        diff = (eager.encode_chunked(song).mean - compiled.encode_chunked(song).mean).abs().max().item()
    print(f"{args.vae} VAE, {args.seconds:g} s song, {args.threads} thread(s):")
    for name, values in times.items():
        print(
            f"  {name:9s} median {statistics.median(values):.2f} s  ({', '.join(f'{v:.2f}' for v in values)})"
        )
    speedup = statistics.median(times["eager"]) / statistics.median(times["compiled"])
    print(f"  speed-up {speedup:.2f}x, largest latent-mean difference {diff:.1e}")


if __name__ == "__main__":
    main()
