"""REPA: align one DiT hidden state with frozen SSL teacher features by cosine similarity.

Per teacher: project the (B, T, D) hidden state, resample it linearly along time to the teacher's frame
count (the teacher's features cover the same audio span as the latent window), L2-normalise both and
take mean(1 - cosine) over valid teacher frames. A teacher frame is valid only when every latent frame
its linear interpolation reads is valid, so padding never leaks in. Total = weighted mean over teachers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.models.repa import REPAProjectors
from refrain.models.teachers import TeacherSpec


def resample_time(x: Tensor, frames: int) -> Tensor:
    """(B, T, D) -> (B, frames, D) by linear interpolation (half-pixel centres)."""
    if x.shape[1] == frames:
        return x
    return F.interpolate(x.transpose(1, 2), size=frames, mode="linear", align_corners=False).transpose(1, 2)


def resample_mask(frame_mask: Tensor, frames: int) -> Tensor:
    """(B, T) bool -> (B, frames) bool: True where the interpolation reads valid frames only."""
    if frame_mask.shape[1] == frames:
        return frame_mask.bool()
    weights = resample_time(frame_mask.float().unsqueeze(-1), frames).squeeze(-1)
    return weights >= 1.0 - 1e-5


def repa_loss(
    hidden: Tensor,
    frame_mask: Tensor,
    teacher_features: Mapping[str, Tensor],
    projectors: Mapping[str, nn.Module],
    weights: Mapping[str, float] | None = None,
    teacher_masks: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Named terms: ``repa/<teacher>`` per teacher and ``repa`` (weighted mean). Lower is better, 0 = aligned.

    hidden: (B, T, D) DiT state; frame_mask: (B, T) valid latent frames; teacher_features[name]:
    (B, T_name, D_name); teacher_masks[name] (optional): (B, T_name) valid teacher frames.
    """
    if not teacher_features:
        raise RefrainInputError("repa.teachers", "no teacher features in the batch", "cache teacher features")
    terms: dict[str, Tensor] = {}
    total = hidden.new_zeros((), dtype=torch.float32)
    weight_sum = 0.0
    for name, target in teacher_features.items():
        if name not in projectors:
            raise RefrainInputError(
                f"repa.teachers.{name}",
                "features present but no projector for this teacher",
                "list the teacher in the repa config the task was built with",
            )
        pred = resample_time(projectors[name](hidden), target.shape[1])
        mask = resample_mask(frame_mask, target.shape[1])
        if teacher_masks is not None and name in teacher_masks:
            mask = mask & teacher_masks[name].bool()
        cosine = F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-6)
        valid = mask.to(cosine.dtype)
        loss = ((1.0 - cosine) * valid).sum() / valid.sum().clamp_min(1.0)
        terms[f"repa/{name}"] = loss
        weight = 1.0 if weights is None else float(weights.get(name, 1.0))
        total = total + weight * loss
        weight_sum += weight
    terms["repa"] = total / max(weight_sum, 1e-12)
    return terms


class REPALoss(nn.Module):
    """Projectors plus teacher weights, built from the same TeacherSpecs that data_prep used.

    ``weight`` scales the whole term in the task's loss (flow + weight * repa); the config (repa.loss) gives
    everything but ``hidden_size``, which the task reads from its backbone.
    """

    def __init__(
        self,
        hidden_size: int,
        teachers: Mapping[str, TeacherSpec] | list[TeacherSpec] | None,
        projector_dim: int = 2048,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        items = teachers or {}
        specs = list(items.values()) if isinstance(items, Mapping) else list(items)
        self.weight = float(weight)
        self.weights = {spec.name: float(spec.weight) for spec in specs}
        self.projectors = REPAProjectors(
            hidden_size, {spec.name: spec.resolved_feature_dim() for spec in specs}, projector_dim
        )

    def forward(
        self,
        hidden: Tensor,
        frame_mask: Tensor,
        teacher_features: Mapping[str, Tensor],
        teacher_masks: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        return repa_loss(hidden, frame_mask, teacher_features, self.projectors, self.weights, teacher_masks)
