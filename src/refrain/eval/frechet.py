"""Fréchet distance between two sets of embeddings, each summarised by a Gaussian (mean, covariance).

This is the FAD of Kilgour et al. when the embeddings are an audio model's (VGGish there; MERT or CLAP
here, configurable): d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from refrain.errors import RefrainInputError


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance of a set of embeddings (float64)."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def of(cls, embeddings: np.ndarray, name: str = "embeddings") -> GaussianStats:
        """Stats of (N, D) embeddings; N >= 2 is needed for a covariance."""
        data = np.asarray(embeddings, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 2:
            raise RefrainInputError(
                name, f"{data.shape[0] if data.ndim == 2 else 0} embeddings", "give at least 2 clips per set"
            )
        return cls(data.mean(axis=0), np.cov(data, rowvar=False), int(data.shape[0]))


def frechet_distance(a: GaussianStats, b: GaussianStats, eps: float = 1e-6) -> float:
    """Fréchet distance between two Gaussians; symmetric, 0 for identical stats, never negative.

    ``sqrtm`` of a product of rank-deficient covariances (fewer clips than dimensions) can come back
    non-finite; then both covariances get ``eps`` on the diagonal, as the FID/FAD reference code does.
    """
    diff = a.mean - b.mean
    covmean, _ = linalg.sqrtm(a.cov @ b.cov, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(a.cov.shape[0]) * eps
        covmean = linalg.sqrtm((a.cov + offset) @ (b.cov + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * np.trace(covmean))
    return max(value, 0.0)
