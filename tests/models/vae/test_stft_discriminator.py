"""Multi-scale complex-STFT discriminator: five scales, logits + features, gradients reach the audio."""

from __future__ import annotations

import torch

from refrain.models.vae.discriminator import MultiScaleSTFTDiscriminator, STFTDiscriminator


def test_five_scales_with_logits_and_features() -> None:
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(filters=4, audio_channels=2)
    assert [d.n_fft for d in disc.discriminators] == [2048, 1024, 512, 256, 128]
    assert [d.hop_length for d in disc.discriminators] == [512, 256, 128, 64, 32]
    audio = torch.randn(2, 2, 8192, requires_grad=True)
    logits, features = disc(audio)
    assert len(logits) == len(features) == 5
    for scale, logit, feature in zip(disc.discriminators, logits, features, strict=True):
        frames = 8192 // scale.hop_length + 1
        assert logit.shape[:3] == (2, 1, frames)
        assert len(feature) == 5 and all(f.shape[0] == 2 for f in feature)
    sum(logit.mean() for logit in logits).backward()
    assert audio.grad is not None and audio.grad.abs().sum() > 0


def test_spectrogram_holds_real_and_imaginary_parts_per_channel() -> None:
    disc = STFTDiscriminator(n_fft=256, hop_length=64, audio_channels=2, filters=4)
    audio = torch.zeros(1, 2, 1024)
    audio[0, 1] = torch.sin(torch.arange(1024) * 2 * torch.pi * 16 / 256)  # bin 16, right channel only
    spec = disc.spectrogram(audio)
    assert spec.shape == (1, 4, 1024 // 64 + 1, 129)
    assert spec[:, :2].abs().max() == 0  # left channel is silent
    magnitude = spec[0, 2].pow(2) + spec[0, 3].pow(2)
    assert magnitude.mean(0).argmax().item() == 16
