"""DiffRhythm-1B as a refrain backbone: its DiT (LLaMA blocks from transformers) behind refrain's contract.

The module's ``state_dict`` is the release's DiT ``state_dict``, name for name, so ``cfm_model.pt`` loads
strictly once the CFM wrapper's ``transformer.`` (or EMA ``ema_model.transformer.``) prefix is removed
(``refrain.models.backbones.diffrhythm_load``). The forward pass is DiffRhythm's:

- time, crop start (and, at 6144 frames, song duration) embeddings summed into one 512-d vector ``c``;
- per frame, concat(noisy latent, context latent, lyric embedding, style vector, ``c``) -> dim, plus a
  convolutional position embedding;
- 16 LLaMA decoder blocks (32 heads of 64, RMSNorm, SwiGLU, RoPE, no QK norm) attending to every frame;
  after each of the first half, the lyric embedding through a zero-initialised linear + SiLU is added;
- a final adaLN (scale, shift from ``c``) and a projection back to the 64 latent channels.

Conventions converted at the boundary, so refrain's sampler and flow-matching loss keep theirs: DiffRhythm
runs time t = 0 (noise) .. 1 (data) and predicts data - noise; refrain passes sigma (1 = noise) and wants
noise - data. So t = 1 - sigma and velocity = -prediction. The latent crosses as (B, C, T) and runs as
(B, T, C) inside, which is also how the release draws its starting noise.

Unlike the published code (which unpacks each block's output as a tuple: with transformers 5 a block
returns one tensor, and that unpacking takes batch item 0 for every item), each block's tensor is used
as is, and padded frames are masked from attention and convolutions: every batch item gets the numbers
it gets alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from refrain.errors import RefrainInputError
from refrain.models.backbone import BackboneSpec, seeded_noise
from refrain.models.backbones.common import check_latent_input
from refrain.models.backbones.diffrhythm_conditioning import DiffRhythmConditioning, require_diffrhythm
from refrain.models.backbones.diffrhythm_net import (
    FinalAdaLN,
    InputEmbedding,
    LyricEmbedding,
    TimestepEmbedding,
    attention_bias,
    position_table,
    text_fusion,
)
from refrain.models.backbones.diffrhythm_prompt import placed_ids, styles_from_prompt
from refrain.models.dit.velocity import VelocityOutput

FULL_FRAMES = 6144  # the full model (about 285 s) also embeds the song's duration
RELEASE_STEPS = 32  # the release's sampler: 32 time points from t = 0 to 1, i.e. 31 Euler updates
RELEASE_CFG = 4.0  # v_c + 4 (v_c - v_neg)
TRAIN_RECIPE = {  # the release's CFM: t = sigmoid(N(0, 1)), no shift; lyrics and style dropped for CFG
    "shift": 1.0,
    "logit_mean": 0.0,
    "logit_std": 1.0,
    "drop_style_prob": 0.2,
    "drop_lyrics_prob": 0.2,
    "drop_context_prob": 0.3,
    "drop_speaker_prob": 0.0,
    "masked_span_prob": 0.0,
}
LLAMA_BLOCK = "transformers.models.llama.modeling_llama.LlamaDecoderLayer"


def sampler_defaults() -> dict[str, Any]:
    """The release's sampler in refrain's terms: its grid 1 - linspace(0, 1, 32) is refrain's linear grid
    of 31 steps from sigma 1 to 1/31 (then 0); its guidance v_c + 4 (v_c - v_neg) is CFG with scale 5."""
    steps = RELEASE_STEPS - 1
    return {
        "steps": steps,
        "solver": "euler",
        "shift": 1.0,
        "sigma_min": 1.0 / steps,
        "guidance": "cfg",
        "guidance_scale": RELEASE_CFG + 1.0,
        "guidance_interval": 1.0,
    }


class DiffRhythm(nn.Module):
    """DiffRhythm's DiT with the release's parameter names; defaults are DiffRhythm-1B (1,109.3 M)."""

    def __init__(
        self,
        dim: int = 2048,
        depth: int = 16,
        heads: int = 32,
        dim_head: int = 64,
        ff_mult: int = 4,
        latent_dim: int = 64,
        text_dim: int = 512,
        vocab_size: int = 363,
        conv_layers: int = 4,
        max_frames: int = 2048,
        repa_layer: int | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        """``text_dim`` is also the width of the style vector and of the time/start/duration embeddings
        (the release: 512 for all, since its text-fusion layers read the lyric features through
        ``Linear(cond_dim, dim)``); the duration embedding exists at 6144 frames, as in the release."""
        super().__init__()
        repa_layer = max(1, depth // 3) if repa_layer is None else int(repa_layer)
        if not 1 <= repa_layer <= depth:
            raise RefrainInputError(
                "model.dit.repa_layer",
                f"{repa_layer} is outside [1, {depth}] blocks",
                "pick a block in range",
            )
        cond_dim = text_dim
        self.dim, self.depth, self.latent_dim, self.max_frames = dim, depth, latent_dim, max_frames
        self.repa_layer = repa_layer
        self.time_embed = TimestepEmbedding(cond_dim)
        self.start_time_embed = TimestepEmbedding(cond_dim)
        self.duration_time_embed = TimestepEmbedding(cond_dim) if max_frames == FULL_FRAMES else None
        self.text_embed = LyricEmbedding(vocab_size, text_dim, conv_layers, max_frames)
        self.input_embed = InputEmbedding(latent_dim, text_dim, dim, cond_dim)
        config = LlamaConfig(
            hidden_size=dim,
            intermediate_size=dim * ff_mult,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=dim_head,
            hidden_act="silu",
            max_position_embeddings=max_frames,
            rms_norm_eps=1e-6,
            attention_bias=False,
            mlp_bias=False,
            attention_dropout=0.0,
        )
        config._attn_implementation = "sdpa"
        self.llama_config = config
        self.transformer_blocks = nn.ModuleList(
            [LlamaDecoderLayer(config, layer_idx=i) for i in range(depth)]
        )
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.text_fusion_linears = nn.ModuleList([text_fusion(cond_dim, dim) for _ in range(depth // 2)])
        self.norm_out = FinalAdaLN(dim, cond_dim)
        self.proj_out = nn.Linear(dim, latent_dim)
        self.gradient_checkpointing = bool(gradient_checkpointing)

    def rebuild_buffers(self) -> None:
        """Recompute the non-persistent tables (RoPE frequencies, lyric positions) on the weights' device,
        after a meta-device build filled by ``load_state_dict(assign=True)``."""
        device = self.proj_out.weight.device
        with torch.device(device):
            self.rotary_emb = LlamaRotaryEmbedding(config=self.llama_config)
        lyric = self.text_embed
        lyric.positions = position_table(lyric.text_embed.embedding_dim, lyric.max_frames).to(device)

    # ----- the contract -----
    @property
    def latent_channels(self) -> int:
        return self.latent_dim

    @property
    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(
            name="diffrhythm_1b_full" if self.max_frames == FULL_FRAMES else "diffrhythm_1b",
            latent_channels=self.latent_dim,
            hidden_size=self.dim,
            repa_layer=self.repa_layer,
            conditioning_type=DiffRhythmConditioning,
            supports_context=True,
            cfg_drops=frozenset({"style", "lyrics", "context", "all"}),
            fsdp_wrap=(LLAMA_BLOCK,),
            latent_layout="BTC",
            sampler_defaults=sampler_defaults(),
            loss_preset=dict(TRAIN_RECIPE),
            lora_root=None,
            bundle_class="diffrhythm",
        )

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = bool(enabled)

    def noise(self, seed: int, frames: int) -> Tensor:
        """Drawn (1, T, C) as the release's sampler draws ``randn(frames, 64)``, returned as (1, C, T)."""
        return seeded_noise(seed, self.latent_dim, frames, "BTC")

    def conditioning_from_batch(self, batch: Mapping[str, Any]) -> DiffRhythmConditioning:
        """From a DiffRhythm batch (``refrain.data.diffrhythm``): ``diffrhythm_style`` (B, 512),
        ``diffrhythm_lyrics`` (B, T) ids, ``diffrhythm_start`` (B,) and, optionally, ``diffrhythm_duration``."""
        missing = [k for k in ("diffrhythm_style", "diffrhythm_lyrics") if k not in batch]
        if missing:
            raise RefrainInputError(
                "DiT batch",
                f"has no {' / '.join(missing)} (DiffRhythm's style vector and placed lyric ids)",
                "import the dataset with refrain-import-diffrhythm and train on it (data=diffrhythm)",
            )
        lyrics = batch["diffrhythm_lyrics"].long()
        frame_mask = batch.get("frame_mask")
        frame_mask = torch.ones_like(lyrics, dtype=torch.bool) if frame_mask is None else frame_mask.bool()
        start = batch.get("diffrhythm_start")
        duration = batch.get("diffrhythm_duration") if self.duration_time_embed is not None else None
        return DiffRhythmConditioning(
            batch["diffrhythm_style"].float(),
            lyrics,
            frame_mask,
            start_time=None if start is None else start.float(),
            duration=None if duration is None else duration.float(),
        )

    def prompt_conditioning(
        self,
        prompt: str,
        lyrics: str,
        frames: int,
        total: int | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> DiffRhythmConditioning:
        """One song for refrain's sampler (refrain-infer, ``Pipeline``): ``prompt`` names the style vector file
        (``STYLE|NEGATIVE`` adds the CFG negative style), ``lyrics`` is token-id LRC, ``context`` the kept
        frames of a repaint or extend (see ``refrain.models.backbones.diffrhythm_prompt``)."""
        total = frames if total is None else total
        device = self.proj_out.weight.device
        width = self.text_embed.text_embed.embedding_dim
        style, negative = styles_from_prompt(prompt, width)
        vocab = self.text_embed.text_embed.num_embeddings - 1
        ids = placed_ids(lyrics, frames, total, self.max_frames, vocab)
        valid = (torch.arange(total) < frames)[None]
        cond = DiffRhythmConditioning(
            style,
            ids,
            valid,
            duration=torch.tensor([frames / self.max_frames]),
            negative_style=negative,
            context=None if context is None else context.float().cpu(),
            context_mask=None if context_mask is None else context_mask.float().cpu(),
        )
        return cond.to(device)

    # ----- the network -----
    def conditioning_vector(self, t: Tensor, cond: DiffRhythmConditioning) -> Tensor:
        """(B, cond_dim): time + crop start (+ duration; a full window when none is given)."""
        c = self.time_embed(t) + self.start_time_embed(cond.start_time.to(t))
        if self.duration_time_embed is not None:
            duration = cond.duration if cond.duration is not None else torch.ones_like(t)
            c = c + self.duration_time_embed(duration.to(t))
        return c

    def _block(self, index: int, h: Tensor, bias: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        block = self.transformer_blocks[index]
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(
                lambda a, b, c, s: block(a, attention_mask=b, position_embeddings=(c, s)),
                h,
                bias,
                *rope,
                use_reentrant=False,
            )
        return block(h, attention_mask=bias, position_embeddings=rope)

    def predict_flow(
        self, x: Tensor, t: Tensor, cond: DiffRhythmConditioning, capture: list[Tensor] | None = None
    ) -> Tensor:
        """The release's own convention: x (B, T, C) at time t (B,) -> predicted data - noise (B, T, C)."""
        mask = cond.frame_mask.to(x.device)
        c = self.conditioning_vector(t, cond)
        ids = torch.where(cond.drop_lyrics[:, None], torch.zeros_like(cond.lyrics), cond.lyrics)
        text = self.text_embed(ids, mask)
        context = cond.context_in_use(x.transpose(1, 2)).transpose(1, 2)
        style = cond.style_in_use().to(x.dtype)
        h = self.input_embed(x, context, text, style, c, mask)
        positions = torch.arange(h.shape[1], device=h.device)[None].expand(h.shape[0], -1)
        rope = self.rotary_emb(h, positions)
        bias = attention_bias(mask, h.dtype)
        for index in range(self.depth):
            h = self._block(index, h, bias, rope)  # one tensor per block (transformers 5)
            if index < len(self.text_fusion_linears):
                h = h + self.text_fusion_linears[index](text)
            if capture is not None and index + 1 == self.repa_layer:
                capture.append(h)
        return self.proj_out(self.norm_out(h, c))

    def forward(
        self, x: Tensor, sigma: Tensor, cond: DiffRhythmConditioning, return_hidden: bool = False
    ) -> VelocityOutput:
        """x: (B, C, T) noisy latent at sigma (B,) or scalar, 1 = noise; velocity noise - x0, zero on padding."""
        check_latent_input(
            x,
            self.latent_dim,
            "DiffRhythm input",
            "encode audio with the Stable Audio Open VAE (64 channels at 21.5 frames/s)",
        )
        require_diffrhythm(cond)
        cond.validate(x)
        dtype = self.proj_out.weight.dtype
        t = 1.0 - sigma.to(x.device).reshape(-1).expand(x.shape[0]).to(dtype)  # DiffRhythm's time
        captured: list[Tensor] | None = [] if return_hidden else None
        flow = self.predict_flow(x.transpose(1, 2).to(dtype), t, cond, captured)
        velocity = -flow.transpose(1, 2) * cond.frame_mask[:, None, :].to(flow.dtype)
        return VelocityOutput(velocity.to(x.dtype), captured[-1] if captured else None)
