"""A training wrapper around diffusers' ``AutoencoderOobleck`` (the Stable Audio Open / ACE-Step 1.5 VAE).

The autoencoder itself is diffusers' class, unchanged, so released VAE folders load with their own
parameter names and a trained one saves back in diffusers' format. This wrapper adds what training and
data preparation need: posterior sampling and KL, optional gradient checkpointing, and a chunked codec
that encodes/decodes whole songs in overlapping, crossfaded chunks so memory stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderOobleck
from diffusers.models.autoencoders.autoencoder_oobleck import OobleckDiagonalGaussianDistribution
from torch import nn
from torch.utils.checkpoint import checkpoint

from refrain.errors import RefrainInputError
from refrain.models.vae.chunking import crossfade_chunks

Posterior = OobleckDiagonalGaussianDistribution


@dataclass
class VAEOutput:
    """One reconstruction pass: the decoded audio, the posterior it came from and the latents decoded."""

    reconstruction: torch.Tensor
    posterior: Posterior
    latents: torch.Tensor


class OobleckVAE(nn.Module):
    """Holds an ``AutoencoderOobleck`` as ``self.autoencoder`` and exposes the codec training needs."""

    def __init__(
        self,
        autoencoder: AutoencoderOobleck,
        gradient_checkpointing: bool = False,
        chunk_seconds: float = 20.0,
        overlap_seconds: float = 2.0,
        encode_overlap_seconds: float | None = None,
    ) -> None:
        """``encode_overlap_seconds``: the chunks' overlap when encoding (None = ``overlap_seconds``); the
        encoder's receptive field is far shorter than the decoder's, so it can overlap less."""
        super().__init__()
        self.autoencoder = autoencoder
        self.gradient_checkpointing = gradient_checkpointing
        self.chunk_seconds = chunk_seconds
        self.overlap_seconds = overlap_seconds
        self.encode_overlap_seconds = encode_overlap_seconds

    # ----- shape facts other components read (the DiT reads frame_rate) -----
    @property
    def sample_rate(self) -> int:
        return int(self.autoencoder.config.sampling_rate)

    @property
    def hop_length(self) -> int:
        return int(self.autoencoder.hop_length)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.config.decoder_input_channels)

    @property
    def audio_channels(self) -> int:
        return int(self.autoencoder.config.audio_channels)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    # ----- one-shot codec -----
    def _run(self, stack: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run an Oobleck encoder/decoder, checkpointing each strided block when asked (saves activations)."""
        if not (self.gradient_checkpointing and self.training and torch.is_grad_enabled()):
            return stack(x)
        h = stack.conv1(x)
        for block in stack.block:
            h = checkpoint(block, h, use_reentrant=False)
        return stack.conv2(stack.snake1(h))

    def encode(self, audio: torch.Tensor) -> Posterior:
        """(B, C, T) audio, T a multiple of the hop -> posterior over (B, D, T / hop) latents."""
        self._check_audio(audio)
        return Posterior(self._run(self.autoencoder.encoder, audio))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D, N) latents -> (B, C, N * hop) audio."""
        return self._run(self.autoencoder.decoder, latents)

    def forward(
        self, audio: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> VAEOutput:
        posterior = self.encode(audio)
        latents = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return VAEOutput(self.decode(latents), posterior, latents)

    @staticmethod
    def kl_loss(posterior: Posterior) -> torch.Tensor:
        """KL to N(0, I), summed over latent channels, averaged over batch and frames (Oobleck's convention)."""
        return posterior.kl()

    def freeze_encoder(self) -> None:
        """DiffRhythm's recipe: keep a pretrained encoder (and so the latent space) fixed, train the decoder."""
        for parameter in self.autoencoder.encoder.parameters():
            parameter.requires_grad_(False)

    # ----- chunked codec for whole songs -----
    def pad_to_hop(self, audio: torch.Tensor) -> torch.Tensor:
        """Right-pad with zeros to a whole number of latent frames."""
        remainder = audio.shape[-1] % self.hop_length
        if remainder == 0:
            return audio
        return nn.functional.pad(audio, (0, self.hop_length - remainder))

    def _chunk_frames(self, chunk_seconds: float | None, overlap_seconds: float | None) -> tuple[int, int]:
        chunk = max(1, round((chunk_seconds or self.chunk_seconds) * self.frame_rate))
        overlap_s = self.overlap_seconds if overlap_seconds is None else overlap_seconds
        overlap = min(max(0, round(overlap_s * self.frame_rate)), chunk // 2)
        return chunk, overlap

    @torch.no_grad()
    def encode_chunked(
        self,
        audio: torch.Tensor,
        chunk_seconds: float | None = None,
        overlap_seconds: float | None = None,
        output_device: torch.device | str | None = None,
    ) -> Posterior:
        """Encode a long (B, C, T) waveform chunk by chunk; overlapping chunks are crossfaded.

        The waveform may live on the CPU while the model is on a GPU: only one chunk at a time is moved.
        """
        audio = self.pad_to_hop(audio)
        if overlap_seconds is None:
            overlap_seconds = self.encode_overlap_seconds
        chunk, overlap = self._chunk_frames(chunk_seconds, overlap_seconds)
        device = next(self.parameters()).device
        hop = self.hop_length

        def encode_frames(start: int, stop: int) -> torch.Tensor:
            return self._run(self.autoencoder.encoder, audio[..., start * hop : stop * hop].to(device))

        total = audio.shape[-1] // hop
        params = crossfade_chunks(
            encode_frames, total, chunk, overlap, scale=1, out_device=output_device or audio.device
        )
        return Posterior(params)

    @torch.no_grad()
    def decode_chunked(
        self,
        latents: torch.Tensor,
        chunk_seconds: float | None = None,
        overlap_seconds: float | None = None,
        length: int | None = None,
        output_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Decode (B, D, N) latents chunk by chunk into (B, C, N * hop) audio (trimmed to ``length``)."""
        chunk, overlap = self._chunk_frames(chunk_seconds, overlap_seconds)
        device = next(self.parameters()).device

        def decode_frames(start: int, stop: int) -> torch.Tensor:
            return self.decode(latents[..., start:stop].to(device))

        audio = crossfade_chunks(
            decode_frames,
            latents.shape[-1],
            chunk,
            overlap,
            scale=self.hop_length,
            out_device=output_device or latents.device,
        )
        return audio if length is None else audio[..., :length]

    def _check_audio(self, audio: torch.Tensor) -> None:
        if audio.dim() != 3 or audio.shape[1] != self.audio_channels:
            raise RefrainInputError(
                "audio",
                f"expected (batch, {self.audio_channels}, frames), got {tuple(audio.shape)}",
                "pass batched audio",
            )
        if audio.shape[-1] % self.hop_length:
            raise RefrainInputError(
                "audio",
                f"{audio.shape[-1]} frames is not a multiple of the VAE hop {self.hop_length}",
                "crop or pad (OobleckVAE.pad_to_hop) to a multiple of the hop",
            )


def _resolve_pretrained(path: str | Path) -> Path:
    """Accept a diffusers VAE folder itself or a pipeline folder with a ``vae/`` sub-folder."""
    root = Path(path)
    for candidate in (root, root / "vae"):
        if (candidate / "config.json").is_file():
            return candidate
    raise RefrainInputError(
        root,
        "no diffusers VAE here (config.json missing)",
        "point pretrained_path at a folder saved by save_pretrained",
    )


def build_oobleck_vae(
    sample_rate: int = 44100,
    audio_channels: int = 2,
    downsampling_ratios: list[int] | tuple[int, ...] = (2, 4, 4, 8, 8),
    channel_multiples: list[int] | tuple[int, ...] = (1, 2, 4, 8, 16),
    encoder_hidden_size: int = 128,
    decoder_channels: int = 128,
    latent_channels: int = 64,
    hop_length: int | None = None,
    pretrained_path: str | None = None,
    gradient_checkpointing: bool = False,
    chunk_seconds: float = 20.0,
    overlap_seconds: float = 2.0,
    initial_posterior_std: float | None = None,
    encode_overlap_seconds: float | None = None,
) -> OobleckVAE:
    """Build the VAE a preset describes (Hydra target), optionally from a released VAE's local folder.

    ``hop_length`` and ``latent_channels`` are stated by every preset so other configs can read the
    frame rate; they are checked against the strides and, with ``pretrained_path``, against the weights.
    ``initial_posterior_std`` (a new model only) starts the posterior's noise there (``set_posterior_std``).
    ``encode_overlap_seconds``: the chunks' overlap when encoding whole songs (None = ``overlap_seconds``).
    """
    ratios = [int(r) for r in downsampling_ratios]
    hop = math.prod(ratios)
    if hop_length is not None and int(hop_length) != hop:
        raise RefrainInputError(
            "model.vae.hop_length",
            f"{hop_length} but the strides {ratios} multiply to {hop}",
            "make them agree",
        )
    if encoder_hidden_size != 2 * latent_channels:
        raise RefrainInputError(
            "model.vae.encoder_hidden_size",
            f"Oobleck's encoder emits mean and scale, so it must be 2 x latent_channels ({2 * latent_channels}), got {encoder_hidden_size}",
            f"set encoder_hidden_size: {2 * latent_channels}",
        )
    if pretrained_path:
        from refrain.models.vae.weights import load_autoencoder  # config.json + safetensors, no pickles

        autoencoder = load_autoencoder(_resolve_pretrained(pretrained_path))
        got = (
            autoencoder.config.sampling_rate,
            autoencoder.hop_length,
            autoencoder.config.decoder_input_channels,
        )
        if got != (sample_rate, hop, latent_channels):
            raise RefrainInputError(
                pretrained_path,
                f"weights are (sample_rate, hop, latent) = {got}, the preset says {(sample_rate, hop, latent_channels)}",
                "pick the matching preset (model/vae=sao or model/vae=ace15)",
            )
    else:
        autoencoder = AutoencoderOobleck(
            encoder_hidden_size=encoder_hidden_size,
            downsampling_ratios=ratios,
            channel_multiples=[int(c) for c in channel_multiples],
            decoder_channels=decoder_channels,
            decoder_input_channels=latent_channels,
            audio_channels=audio_channels,
            sampling_rate=sample_rate,
        )
        if initial_posterior_std is not None:
            set_posterior_std(autoencoder, float(initial_posterior_std))
    return OobleckVAE(
        autoencoder, gradient_checkpointing, chunk_seconds, overlap_seconds, encode_overlap_seconds
    )


@torch.no_grad()
def set_posterior_std(autoencoder: AutoencoderOobleck, std: float) -> None:
    """Start a new encoder with posterior noise ``std`` instead of softplus(~0) = 0.69.

    At Oobleck's initialisation the latent mean varies over time by ~0.02 while the sampled noise has std
    0.69: the decoder sees noise, learns the average spectrum, and a short run never leaves that state
    (the demo VAE did exactly that). Shrinking the scale rows of the encoder's last convolution and
    setting their bias to softplus^-1(std) lets the time structure through from the first step; the KL
    term still pulls the noise up during training.
    """
    if not 0.0 < std < 1.0:
        raise RefrainInputError(
            "model.vae.initial_posterior_std", f"must be in (0, 1), got {std}", "use e.g. 0.05"
        )
    conv = autoencoder.encoder.conv2
    half = conv.out_channels // 2
    conv.bias[half:] = math.log(math.expm1(std))
    gain = conv.weight_g if hasattr(conv, "weight_g") else None
    if gain is not None:
        gain[half:] *= 0.01
    else:
        conv.weight[half:] *= 0.01
