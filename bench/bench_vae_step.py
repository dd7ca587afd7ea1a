"""The VAE's spectral loss against the same loss on auraloss's stock modules, side by side in one run.

``StereoMRSTFTLoss`` (mid/side + left/right, 7 FFT sizes) computes auraloss's magnitude terms through
``MagnitudeSTFTLoss``, which skips the phase auraloss's ``STFTLoss.stft`` always computes. Here the same
loss is also built on auraloss's ``MultiResolutionSTFTLoss``; both run forward + backward on the same
batch, interleaved (A B A B ...), and the script prints their median times, the speed-up and the largest
difference of their values (they must agree).

    python bench/bench_vae_loss.py [--batch 2] [--crop 32768] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from auraloss.freq import MultiResolutionSTFTLoss

from refrain.losses.spectral import StereoMRSTFTLoss


def stock_auraloss(loss: StereoMRSTFTLoss) -> StereoMRSTFTLoss:
    """A copy of ``loss`` whose resolutions are auraloss's own ``MultiResolutionSTFTLoss`` modules."""
    stock = StereoMRSTFTLoss(44100, mid_side_weight=loss.mid_side_weight, channel_weight=loss.channel_weight)
    for name in ("with_sc", "without_sc"):
        ours = getattr(loss, name).stft_losses
        resolutions = [[f.fft_size for f in ours], [f.hop_size for f in ours], [f.win_length for f in ours]]
        first = ours[0]
        setattr(
            stock,
            name,
            MultiResolutionSTFTLoss(
                *resolutions, w_sc=first.w_sc, w_log_mag=first.w_log_mag, w_lin_mag=first.w_lin_mag
            ),
        )
    return stock


def timed(loss: StereoMRSTFTLoss, prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Seconds of one forward + backward, and the loss's value."""
    prediction = prediction.detach().requires_grad_()
    start = time.perf_counter()
    value = loss(prediction, target)["stft"]
    value.backward()
    return time.perf_counter() - start, float(value.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="the demo recipe's batch")
    parser.add_argument("--crop", type=int, default=32768, help="samples per crop (the demo's 0.74 s)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    target = 0.1 * torch.randn(args.batch, 2, args.crop, generator=generator)
    prediction = target + 0.02 * torch.randn(target.shape, generator=generator)
    ours = StereoMRSTFTLoss(44100)
    stock = stock_auraloss(ours)
    times: dict[str, list[float]] = {"refrain": [], "auraloss": []}
    values: dict[str, float] = {}
    for repeat in range(args.repeats + 1):
        for name, loss in (("refrain", ours), ("auraloss", stock)):
            seconds, values[name] = timed(loss, prediction, target)
            if repeat:  # the first round warms both up
                times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"StereoMRSTFTLoss forward + backward, batch {args.batch} x 2 ch x {args.crop} samples, "
        f"{args.threads} thread(s), load average {load}\n"
    )
    print("| loss | median ms | min ms | value |")
    print("|---|---|---|---|")
    for name in times:
        print(f"| {name} | {1e3 * median[name]:.1f} | {1e3 * min(times[name]):.1f} | {values[name]:.6f} |")
    print(
        f"\nspeed-up {median['auraloss'] / median['refrain']:.2f}x; "
        f"value difference {abs(values['refrain'] - values['auraloss']):.2e}"
    )


if __name__ == "__main__":
    main()
