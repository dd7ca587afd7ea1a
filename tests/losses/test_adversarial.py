"""Hinge losses and feature matching, checked against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from refrain.losses.adversarial import discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss


def test_discriminator_hinge_by_hand() -> None:
    real = [torch.tensor([2.0, 0.5]), torch.tensor([-1.0])]
    fake = [torch.tensor([-2.0, 0.0]), torch.tensor([1.0])]
    terms = discriminator_hinge_loss(real, fake)
    # real: scale 1 mean(relu(1 - [2, .5])) = .25, scale 2 relu(2) = 2 -> 1.125
    # fake: scale 1 mean(relu(1 + [-2, 0])) = .5, scale 2 relu(2) = 2 -> 1.25
    assert terms["disc_real"].item() == pytest.approx(1.125)
    assert terms["disc_fake"].item() == pytest.approx(1.25)
    assert terms["disc"].item() == pytest.approx(2.375)


def test_generator_hinge_by_hand() -> None:
    fake = [torch.tensor([2.0, 0.0]), torch.tensor([-1.0])]
    # scale 1: mean(relu(1 - [2, 0])) = .5 ; scale 2: relu(2) = 2 -> 1.25
    assert generator_hinge_loss(fake)["adv"].item() == pytest.approx(1.25)


def test_feature_matching_is_relative_l1_and_ignores_real_gradients() -> None:
    real = [[torch.full((2, 3), 2.0, requires_grad=True)], [torch.full((1, 4), -4.0)]]
    fake = [[torch.full((2, 3), 3.0, requires_grad=True)], [torch.full((1, 4), -4.0)]]
    terms = feature_matching_loss(real, fake)
    # layer 1: |3 - 2| / 2 = .5 ; layer 2: 0 -> mean .25
    assert terms["feature_matching"].item() == pytest.approx(0.25)
    terms["feature_matching"].backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None
