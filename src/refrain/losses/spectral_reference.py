"""The stereo STFT loss computed signal by signal, resolution by resolution, as auraloss composes it: what
``StereoMRSTFTLoss`` must equal. The tests compare values and gradients with it and
``bench/bench_vae_step.py`` times both.

Each resolution is ``MagnitudeSTFTLoss``, auraloss's ``STFTLoss`` without the phase it drops (equal to
auraloss's own values and gradients, and to its ``scale="mel"`` terms where no band is under the floor:
tests/losses). Kept out of the training path: it runs the A-weighting filter and the STFT once per
resolution and signal (mid, side, left, right).
"""

from __future__ import annotations

import torch
from auraloss.perceptual import SumAndDifference
from torch import nn

from refrain.losses.spectral import MagnitudeMRSTFTLoss, StereoMRSTFTLoss


class StereoReference(nn.Module):
    """``StereoMRSTFTLoss``'s terms from one ``MagnitudeMRSTFTLoss`` call per signal.

    ``loss`` gives the resolutions, weights, mel bands, silence rule and term weights.
    """

    def __init__(self, loss: StereoMRSTFTLoss) -> None:
        super().__init__()
        self.loss = loss
        first = loss.resolutions[0]
        options = {
            "fft_sizes": [r.fft_size for r in loss.resolutions],
            "hop_sizes": [r.hop_size for r in loss.resolutions],
            "win_lengths": [r.win_length for r in loss.resolutions],
            "mel_bins": loss.mel_bins,
            "w_log_mag": first.w_log_mag,
            "w_lin_mag": first.w_lin_mag,
            "sample_rate": first.sample_rate,
            "perceptual_weighting": first.perceptual_weighting,
        }
        self.with_sc = MagnitudeMRSTFTLoss(**options, w_sc=first.w_sc)
        self.without_sc = MagnitudeMRSTFTLoss(**options, w_sc=0.0)
        self.sum_and_difference = SumAndDifference()

    def _term(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loud = target.pow(2).mean().sqrt() > self.loss.silence_rms
        module = self.with_sc if loud else self.without_sc
        return module(prediction.contiguous(), target.contiguous())

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        channels = prediction.shape[1]
        pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if channels == 2 and self.loss.mid_side_weight:
            (pred_mid, pred_side), (true_mid, true_side) = (
                self.sum_and_difference(prediction),
                self.sum_and_difference(target),
            )
            pairs |= {"mid": (pred_mid, true_mid), "side": (pred_side, true_side)}
        names = self.loss.signal_names(channels)[-channels:]
        pairs |= {name: (prediction[:, i : i + 1], target[:, i : i + 1]) for i, name in enumerate(names)}
        terms = {f"stft_{name}": self._term(*pair) for name, pair in pairs.items()}
        terms["stft"] = self.loss.weighted_total(terms, channels)
        return terms
