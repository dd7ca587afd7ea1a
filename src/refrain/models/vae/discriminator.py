"""EnCodec-style multi-scale complex-STFT discriminator (the one Stable Audio Open's VAE was trained with).

Each scale looks at the real and imaginary parts of one STFT resolution as image channels, so it judges
phase as well as magnitude; five scales from FFT 2048 down to 128 cover tonal and transient detail.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def _padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


class STFTDiscriminator(nn.Module):
    """One resolution: complex STFT -> 2-D conv stack over (time, frequency) -> a logit map + features."""

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        audio_channels: int = 2,
        filters: int = 32,
        max_filters: int = 1024,
        filters_scale: int = 1,
        dilations: Sequence[int] = (1, 2, 4),
        kernel: tuple[int, int] = (3, 9),
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        kernel = (int(kernel[0]), int(kernel[1]))
        layers = [weight_norm(nn.Conv2d(2 * audio_channels, filters, kernel, padding=_padding(kernel)))]
        in_channels = filters
        for index, dilation in enumerate(dilations):
            out_channels = min(filters * filters_scale ** (index + 1), max_filters)
            layers.append(
                weight_norm(
                    nn.Conv2d(
                        in_channels,
                        out_channels,
                        kernel,
                        stride=(1, 2),
                        dilation=(dilation, 1),
                        padding=_padding(kernel, (dilation, 1)),
                    )
                )
            )
            in_channels = out_channels
        layers.append(weight_norm(nn.Conv2d(in_channels, in_channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(layers)
        self.conv_post = weight_norm(nn.Conv2d(in_channels, 1, (3, 3), padding=(1, 1)))
        self.activation = nn.LeakyReLU(0.2)

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, 2C, frames, bins): real and imaginary parts as channels."""
        batch, channels, length = audio.shape
        spec = torch.stft(
            audio.reshape(batch * channels, length).float(),
            self.n_fft,
            self.hop_length,
            window=self.window,
            normalized=True,
            return_complex=True,
        )
        spec = torch.view_as_real(spec)  # (B*C, bins, frames, 2)
        spec = spec.reshape(batch, channels, *spec.shape[1:]).permute(0, 1, 4, 3, 2)
        return spec.reshape(batch, 2 * channels, spec.shape[-2], spec.shape[-1])

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = self.spectrogram(audio).to(audio.dtype)
        features = []
        for conv in self.convs:
            hidden = self.activation(conv(hidden))
            features.append(hidden)
        return self.conv_post(hidden), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several ``STFTDiscriminator`` resolutions; returns one logit map and one feature list per scale."""

    def __init__(
        self,
        n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
        hop_ratio: float = 0.25,
        audio_channels: int = 2,
        filters: int = 32,
        max_filters: int = 1024,
        filters_scale: int = 1,
        dilations: Sequence[int] = (1, 2, 4),
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(
                int(n_fft),
                max(1, int(n_fft * hop_ratio)),
                audio_channels,
                filters,
                max_filters,
                filters_scale,
                dilations,
            )
            for n_fft in n_ffts
        )

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, features = [], []
        for discriminator in self.discriminators:
            logit, feature = discriminator(audio)
            logits.append(logit)
            features.append(feature)
        return logits, features
