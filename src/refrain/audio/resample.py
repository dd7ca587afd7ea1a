"""Sample-rate conversion with soxr, the one resampler the project uses."""

from __future__ import annotations

from math import gcd

import numpy as np
import soxr


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample (channels, frames) or (frames,) float audio from `orig_sr` to `target_sr`.

    soxr's one-shot call compensates its own filter delay, so the output stays time-aligned with
    the input and has round(frames * target_sr / orig_sr) frames.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    samples = np.asarray(samples, dtype=np.float32)
    if orig_sr == target_sr or samples.shape[-1] == 0:
        return samples.copy()
    if samples.ndim == 1:
        return soxr.resample(samples, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise ValueError(f"expected (channels, frames) or (frames,), got shape {samples.shape}")
    out = soxr.resample(np.ascontiguousarray(samples.T), orig_sr, target_sr, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def alignment_step(orig_sr: int, target_sr: int) -> int:
    """Smallest input frame count whose resampled length is a whole number of output frames.

    A context margin that is a multiple of this step keeps a resampled crop on the same sample
    grid as the resampled whole file.
    """
    return orig_sr // gcd(orig_sr, target_sr)
