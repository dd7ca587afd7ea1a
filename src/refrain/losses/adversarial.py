"""Hinge GAN losses and feature matching over a multi-scale discriminator's outputs (named terms).

Inputs are what ``MultiScaleSTFTDiscriminator`` returns: one logit map per scale and, for feature
matching, one list of intermediate feature maps per scale. Each scale counts equally.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def discriminator_hinge_loss(
    real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """mean_scales[ relu(1 - D(real)) + relu(1 + D(fake)) ] -> ``{"disc", "disc_real", "disc_fake"}``."""
    real = torch.stack([F.relu(1.0 - logit).mean() for logit in real_logits]).mean()
    fake = torch.stack([F.relu(1.0 + logit).mean() for logit in fake_logits]).mean()
    return {"disc": real + fake, "disc_real": real, "disc_fake": fake}


def generator_hinge_loss(fake_logits: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """mean_scales[ relu(1 - D(fake)) ] -> ``{"adv": ...}`` (EnCodec's generator hinge)."""
    return {"adv": torch.stack([F.relu(1.0 - logit).mean() for logit in fake_logits]).mean()}


def feature_matching_loss(
    real_features: Sequence[Sequence[torch.Tensor]], fake_features: Sequence[Sequence[torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Relative L1 between the discriminator's features of real and generated audio -> ``{"feature_matching"}``.

    Each layer's L1 is divided by the mean magnitude of the real features, so layers of different scale
    weigh alike (EnCodec's normalisation); real features are constants here.
    """
    terms = []
    for real_scale, fake_scale in zip(real_features, fake_features, strict=True):
        for real, fake in zip(real_scale, fake_scale, strict=True):
            real = real.detach()
            terms.append(F.l1_loss(fake, real) / (real.abs().mean() + 1e-8))
    return {"feature_matching": torch.stack(terms).mean()}
