"""REPA alignment loss: zero when aligned, padding-blind, weighted over teachers, gradients reach projectors."""

from __future__ import annotations

import pytest
import torch

from refrain.errors import RefrainInputError
from refrain.losses.repa import REPALoss, repa_loss, resample_mask, resample_time
from refrain.models.repa import REPAProjectors
from refrain.models.teachers import TeacherSpec

D = 16


def setup() -> tuple[torch.Tensor, torch.Tensor, REPAProjectors]:
    torch.manual_seed(0)
    hidden = torch.randn(2, 10, D, requires_grad=True)
    frame_mask = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])
    return hidden, frame_mask, REPAProjectors(D, {"mert": 12, "mhubert": 8}, projector_dim=32)


def test_resample_time_and_mask() -> None:
    x = torch.arange(4.0).view(1, 4, 1)
    assert torch.allclose(
        resample_time(x, 8).flatten(), torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])
    )
    mask = torch.tensor([[True, True, True, False]])
    # teacher frames that interpolate from the padded latent frame are invalid
    assert resample_mask(mask, 8).tolist() == [[True, True, True, True, True, False, False, False]]


def test_perfectly_aligned_features_give_zero_loss() -> None:
    hidden, frame_mask, projectors = setup()
    feats = {
        name: 3.0 * resample_time(proj(hidden), frames).detach()  # cosine ignores scale
        for (name, proj), frames in zip(projectors.items(), (25, 17), strict=True)
    }
    terms = repa_loss(hidden, frame_mask, feats, projectors)
    assert set(terms) == {"repa", "repa/mert", "repa/mhubert"}
    assert all(float(v.detach()) < 1e-5 for v in terms.values())
    opposite = {name: -f for name, f in feats.items()}
    assert abs(float(repa_loss(hidden, frame_mask, opposite, projectors)["repa"].detach()) - 2.0) < 1e-4


def test_gradients_reach_projectors_and_hidden() -> None:
    hidden, frame_mask, projectors = setup()
    feats = {"mert": torch.randn(2, 25, 12), "mhubert": torch.randn(2, 17, 8)}
    repa_loss(hidden, frame_mask, feats, projectors)["repa"].backward()
    for proj in projectors.values():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    assert hidden.grad[0].abs().sum() > 0
    assert torch.equal(hidden.grad[1, 6:], torch.zeros(4, D))  # padded frames get no gradient


def test_padding_does_not_change_the_loss() -> None:
    hidden, frame_mask, projectors = setup()
    feats = {"mert": torch.randn(2, 25, 12), "mhubert": torch.randn(2, 17, 8)}
    ref = repa_loss(hidden, frame_mask, feats, projectors)
    hidden2 = hidden.detach().clone()
    hidden2[1, 6:] = 50.0
    feats2 = {k: v.clone() for k, v in feats.items()}
    feats2["mert"][1, 20:] = -9.0  # teacher frames past the valid latent span
    out = repa_loss(hidden2, frame_mask, feats2, projectors)
    for key in ref:
        assert torch.allclose(out[key], ref[key], atol=1e-6)


def test_weighted_mean_over_teachers_and_teacher_masks() -> None:
    hidden, frame_mask, projectors = setup()
    feats = {"mert": torch.randn(2, 25, 12), "mhubert": torch.randn(2, 17, 8)}
    terms = repa_loss(hidden, frame_mask, feats, projectors, weights={"mert": 3.0, "mhubert": 1.0})
    expected = (3.0 * terms["repa/mert"] + terms["repa/mhubert"]) / 4.0
    assert torch.allclose(terms["repa"], expected)
    masks = {"mert": torch.zeros(2, 25, dtype=torch.bool)}
    masks["mert"][0, :5] = True
    masked = repa_loss(hidden, frame_mask, feats, projectors, teacher_masks=masks)
    feats_changed = {"mert": feats["mert"].clone(), "mhubert": feats["mhubert"]}
    feats_changed["mert"][:, 5:] = torch.randn(2, 20, 12)
    again = repa_loss(hidden, frame_mask, feats_changed, projectors, teacher_masks=masks)
    assert torch.allclose(masked["repa/mert"], again["repa/mert"])


def test_repa_loss_module_from_specs() -> None:
    specs = {
        "mert": TeacherSpec("mert", "unused", 24000, feature_dim=12, weight=2.0),
        "mhubert": TeacherSpec("mhubert", "unused", 16000, feature_dim=8),
    }
    module = REPALoss(D, specs, projector_dim=32)
    assert module.weights == {"mert": 2.0, "mhubert": 1.0}
    hidden, frame_mask, _ = setup()
    terms = module(hidden, frame_mask, {"mert": torch.randn(2, 25, 12), "mhubert": torch.randn(2, 17, 8)})
    assert terms["repa"].isfinite() and 0.0 < float(terms["repa"].detach()) < 2.0
    with pytest.raises(RefrainInputError, match="no projector"):
        module(hidden, frame_mask, {"other": torch.randn(2, 5, 4)})
