"""LLaMA-style diffusion transformer over VAE latents, the default ``VelocityModel``.

Data path: latent (B, C, T) -> linear -> + frame conditioning (aligned lyrics, context latent + mask)
-> tokens of ``patch_size`` frames (1 = one token per frame) -> N x [adaLN-zero self-attention with RoPE
and the padding mask, cross-attention to the style prompt, SwiGLU MLP] -> adaLN final layer -> velocity
(B, C, T), every frame's own. The timestep (sigma scaled to [0, 1000]) goes through diffusers'
``Timesteps``/``TimestepEmbedding``; pooled style and speaker are added to it and drive every block's
modulation.

Why cross-attention for the style prompt (not in-context tokens): the prompt then never changes the
token sequence, so RoPE positions, the padding mask and the REPA hidden state follow the latent frames
alone; a long song (6144 frames) does not pay for prompt length in self-attention; and it matches
ACE-Step v1, whose LoRA target list (``to_q/to_k/to_v/to_out.0`` in self *and* cross attention) then
applies unchanged. DiffRhythm's finding against cross-attention concerns unaligned *lyrics*, which this
model adds frame by frame instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from refrain.errors import RefrainInputError
from refrain.models.backbone import BackboneSpec, frames_to_tokens, seeded_noise
from refrain.models.dit.blocks import DiTBlock, FinalLayer, rotary_tables, zero_linear
from refrain.models.dit.conditioning import ConditionEmbedder, DiTConditioning, PreparedConditioning
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.velocity import VelocityOutput


def llama_intermediate_size(hidden_size: int, multiple_of: int = 256) -> int:
    """LLaMA's SwiGLU width: 2/3 of 4d, rounded up, so the MLP costs about what a 4d GELU MLP does."""
    width = int(8 * hidden_size / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


class DiffusionTransformer(nn.Module):
    """Flow-matching DiT. All sizes come from one DiTConfig (conf/model/dit/*.yaml, a bundle's manifest)."""

    def __init__(self, config: DiTConfig | Mapping[str, Any], gradient_checkpointing: bool = False) -> None:
        """``config``: the sizes (a DiTConfig, or its fields as a mapping: a manifest, a Hydra node)."""
        super().__init__()
        config = DiTConfig.coerce(config)
        self.config = config
        latent_channels, hidden_size = config.latent_channels, config.hidden_size
        self._latent_channels = latent_channels
        self.hidden_size = hidden_size
        self.num_heads = config.num_heads
        self.head_dim = hidden_size // config.num_heads
        self.repa_layer = config.repa_layer
        self.rope_theta = config.rope_theta
        self.attention_window = config.attention_window
        self.patch_size = patch = config.patch_size
        self.timestep_scale = config.timestep_scale
        self.gradient_checkpointing = gradient_checkpointing
        ff = config.intermediate_size or llama_intermediate_size(hidden_size)

        self.proj_in = nn.Linear(latent_channels * patch, hidden_size)
        # A token's conditioning: its frames' embeddings side by side, projected (nothing to merge at 1).
        self.frame_merge = nn.Linear(patch * hidden_size, hidden_size) if patch > 1 else None
        self.conditioner = ConditionEmbedder(
            hidden_size,
            latent_channels,
            config.text_dim,
            config.lyric_vocab_size,
            config.lyric_dim,
            config.lyric_conv_layers,
            config.lyric_kernel_size,
            config.speaker_dim,
            config.use_context,
            config.style_cross_attention,
        )
        frequencies = config.frequency_embedding_size
        self.time_proj = Timesteps(frequencies, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(frequencies, hidden_size)
        self.adaLN_modulation: nn.Module | None = None
        if config.shared_adaln:
            self.adaLN_modulation = nn.Sequential(
                nn.SiLU(), zero_linear(nn.Linear(hidden_size, 6 * hidden_size))
            )
        self.blocks = nn.ModuleList(
            DiTBlock(
                hidden_size,
                config.num_heads,
                ff,
                config.qk_norm,
                config.shared_adaln,
                config.norm_eps,
                config.dropout,
                config.style_cross_attention,
            )
            for _ in range(config.num_layers)
        )
        self.final_layer = FinalLayer(
            hidden_size, latent_channels * patch, config.norm_eps, config.zero_init_output
        )

    @property
    def latent_channels(self) -> int:
        return self._latent_channels

    @property
    def backbone_spec(self) -> BackboneSpec:
        """refrain's own DiT: every CFG drop, context when built with it, ACE-Step v1 sampler defaults."""
        return BackboneSpec(
            name="refrain_dit",
            latent_channels=self.latent_channels,
            hidden_size=self.hidden_size,
            repa_layer=self.repa_layer,
            conditioning_type=DiTConditioning,
            supports_context=bool(self.conditioner.use_context),
            cfg_drops=frozenset({"style", "lyrics", "context", "all"}),
            fsdp_wrap=("refrain.models.dit.blocks.DiTBlock",),
            bundle_class="dit",
        )

    def conditioning_from_batch(self, batch: Mapping[str, Any]) -> DiTConditioning:
        """Style states, frame-aligned phonemes, speaker and frame mask of a DiT batch."""
        return DiTConditioning(
            style=batch["style"],
            style_mask=batch["style_mask"].bool(),
            lyrics=batch["lyrics"].long(),
            speaker=batch.get("speaker"),
            frame_mask=batch["frame_mask"].bool(),
            all_frames_valid=batch.get("all_frames_valid"),
            host_dropped_style=batch.get("style_absent"),
        )

    def noise(self, seed: int, frames: int) -> Tensor:
        return seeded_noise(seed, self.latent_channels, frames)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in backward: trades ~30% step time for activation memory."""
        self.gradient_checkpointing = enabled

    def prepare(self, cond: DiTConditioning) -> PreparedConditioning:
        """Validate and embed ``cond`` once; ``forward`` then takes the result at every step of a run.

        The sampler calls it once per run (``GuidedVelocity``); rows whose lyrics or style a guidance
        pass drops skip their encoder here on every device.
        """
        cond.validate()
        self.conditioner.lyric_embedder.check_ids(cond.lyrics)  # the one-line error, on any device
        embedded = self.conditioner(cond, skip_dropped=True)
        return PreparedConditioning(cond, embedded, all_frames_valid=bool(cond.frame_mask.all()))

    def embed(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: DiTConditioning | PreparedConditioning,
        all_valid: bool | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Input tokens h (B, T / patch_size, d), conditioning vector c (B, d), style tokens and key mask.
        ``all_valid``: every frame known valid, as ``forward`` decided it once (None: decided here)."""
        if all_valid is None:
            all_valid = _all_valid(cond, cond.cond if isinstance(cond, PreparedConditioning) else cond)
        dtype = self.proj_in.weight.dtype
        emb = cond.embedded if isinstance(cond, PreparedConditioning) else self.conditioner(cond)
        h = self._tokens(x.transpose(1, 2).to(dtype), emb.frame.to(dtype), cond, all_valid)
        sigma = sigma.to(x.device).reshape(-1).expand(x.shape[0])
        t = self.time_proj(sigma.float() * self.timestep_scale).to(dtype)
        c = self.time_embed(t) + emb.vector.to(dtype)
        style = emb.style.to(dtype) if emb.style is not None else None
        return h, c, style, emb.style_mask

    def _tokens(
        self, latent: Tensor, frame: Tensor, cond: DiTConditioning | PreparedConditioning, all_valid: bool
    ) -> Tensor:
        """(B, T, C) latent frames and their (B, T, d) conditioning -> (B, T / patch_size, d) tokens."""
        if self.frame_merge is None:
            return self.proj_in(latent) + frame
        plain = cond.cond if isinstance(cond, PreparedConditioning) else cond
        if not all_valid:  # a token holding a song's last frames and padding: padding as zeros
            valid = plain.frame_mask[:, :, None].to(latent.dtype)
            latent, frame = latent * valid, frame * valid
        patch = self.patch_size
        return self.proj_in(patchify(latent, patch)) + self.frame_merge(patchify(frame, patch))

    def forward(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: DiTConditioning | PreparedConditioning,
        return_hidden: bool = False,
    ) -> VelocityOutput:
        """x: (B, C, T) noisy latent, sigma: (B,) or scalar; returns velocity (B, C, T), zero on padding.

        ``cond`` is a batch's conditioning, or the result of ``prepare`` (embedded once for many calls).
        """
        if x.dim() != 3 or x.shape[1] != self.latent_channels:
            raise RefrainInputError(
                "DiffusionTransformer input",
                f"latent shape {tuple(x.shape)} is not (B, {self.latent_channels}, T)",
                "set model.dit.config.latent_channels to the VAE's latent channel count",
            )
        prepared = cond
        cond = cond.cond if isinstance(cond, PreparedConditioning) else cond
        if prepared is cond:
            cond.validate(x)
        else:
            cond.validate_latent(x)
        all_valid = _all_valid(prepared, cond)
        h, c, style, style_mask = self.embed(x, sigma, prepared, all_valid)
        shared = self.adaLN_modulation(c) if self.adaLN_modulation is not None else None
        frames, tokens, patch = x.shape[-1], h.shape[1], self.patch_size
        rope = rotary_tables(self.head_dim, tokens, self.rope_theta, x.device)
        self_mask = None if all_valid else token_mask(cond.frame_mask, patch)[:, None, None, :]
        window = None if self.attention_window is None else max(2, self.attention_window // patch)
        self_mask = _windowed(self_mask, tokens, window, x.device)
        style_key_mask = style_mask[:, None, None, :] if style_mask is not None else None
        hidden = h if (return_hidden and self.repa_layer == 0) else None
        use_ckpt = self.gradient_checkpointing and torch.is_grad_enabled()
        for index, block in enumerate(self.blocks):
            args = (h, c, shared, rope, self_mask, style, style_key_mask)
            h = checkpoint(block, *args, use_reentrant=False) if use_ckpt else block(*args)
            if return_hidden and index + 1 == self.repa_layer:
                hidden = h
        if hidden is not None:  # REPA reads one state per latent frame: each frame gets its token's
            hidden = frames_to_tokens(hidden, frames, patch)
        velocity = unpatchify(self.final_layer(h, c), patch, frames)  # (B, T, C)
        if not all_valid:  # padding: zero its velocity (with every frame valid this was a * 1)
            velocity = velocity * cond.frame_mask[:, :, None].to(velocity.dtype)
        # laid out as x, (B, C, T) contiguous: a transposed view made every solver and guidance op after
        # the call read strided memory (and copy it to flatten), time outside the network in the sampler
        velocity = velocity.transpose(1, 2).contiguous()
        return VelocityOutput(velocity=velocity.to(x.dtype), hidden=hidden)


def patchify(frames: Tensor, patch: int) -> Tensor:
    """(B, T, k) -> (B, ceil(T / patch), patch * k): each token holds ``patch`` consecutive frames side by
    side (the last one zero-padded when T is not a multiple)."""
    if patch == 1:
        return frames
    batch, length, width = frames.shape
    pad = -length % patch
    if pad:
        frames = F.pad(frames, (0, 0, 0, pad))
    return frames.reshape(batch, (length + pad) // patch, patch * width)


def unpatchify(tokens: Tensor, patch: int, frames: int) -> Tensor:
    """(B, N, patch * k) -> (B, frames, k): the inverse of ``patchify`` (its padding cut off)."""
    if patch == 1:
        return tokens
    batch, count, width = tokens.shape
    return tokens.reshape(batch, count * patch, width // patch)[:, :frames]


def token_mask(frame_mask: Tensor, patch: int) -> Tensor:
    """(B, T) valid frames -> (B, ceil(T / patch)) valid tokens: a token with any valid frame is valid."""
    if patch == 1:
        return frame_mask
    return patchify(frame_mask[:, :, None], patch).any(dim=-1)


def _windowed(mask: Tensor | None, frames: int, window: int | None, device: torch.device) -> Tensor | None:
    """The self-attention mask, limited to ``window // 2`` frames either way when the sequence is longer
    than ``window`` (shorter sequences, e.g. every training crop of a run that sets it so, are untouched)."""
    if window is None or frames <= window:
        return mask
    index = torch.arange(frames, device=device)
    band = (index[:, None] - index[None, :]).abs() <= window // 2
    return band if mask is None else mask & band


def _all_valid(prepared: DiTConditioning | PreparedConditioning, cond: DiTConditioning) -> bool:
    """Every frame valid, known without a device read: then attention runs unmasked (a mask rules out the
    flash kernel on CUDA). Known from ``prepare`` (once per run), from the batch's host-side flag (collate
    computes it on the CPU) or for free on CPU tensors; otherwise the mask stays rather than synchronise."""
    if isinstance(prepared, PreparedConditioning):
        return prepared.all_frames_valid
    return cond.known_all_valid()
