"""ACE-Step 1.5 as a refrain backbone: diffusers' ``AceStepTransformer1DModel`` + ``AceStepConditionEncoder``.

The wrapper only converts at the boundary, it re-implements nothing:

- refrain's (B, C, T) latents <-> the model's channels-last (B, T, 64) at 25 frames/s;
- sigma (1 = noise) is ACE-Step's ``timestep`` as is, with ``timestep_r = timestep``; the velocity is
  noise - x0 in both, so refrain's solvers, guidance and flow-matching loss apply unchanged;
- refrain's context (source latent + mask 1 where *given*) -> ``context_latents`` = cat(source latent,
  chunk mask 1 where *generated*), with the release's silence latent where nothing is given; a whole
  reference track (StemGen, singing2accompaniment) is the release's lego/complete context (``ace15_tasks``);
- a dropped condition is the learned ``null_condition_emb`` over the whole packed sequence (the only
  CFG drop the release was trained with);
- the REPA hidden state is a forward hook on one transformer block, its patch tokens (two frames each)
  repeated to one token per latent frame.

Known limit kept from the release: self- and cross-attention have no padding mask, so a batch item's
output depends on the padding of its batch-mates. Train on equal-length crops (the DiT data crops to
``max_frames``) and sample one song per call for results that match the reference pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers import AceStepTransformer1DModel
from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.models.backbone import BackboneSpec, frames_to_tokens, seeded_noise
from refrain.models.backbones.ace15_conditioning import AceStepConditioning
from refrain.models.backbones.ace15_release import (  # noqa: F401 - where callers import them from
    LAYOUT,
    check_release_folder,
    is_release_folder,
    release_fact,
)
from refrain.models.backbones.ace15_tasks import (
    batch_metas,
    context_latents,
    reference_instruction,
    silence,
)
from refrain.models.backbones.ace15_text import SongMeta, TextSide, text_cache_dir
from refrain.models.backbones.ace15_timbre import TimbreSide, reference_latents, timbre_side
from refrain.models.backbones.common import (
    check_latent_input,
    public_config,
    resolve_repa_layer,
    set_gradient_checkpointing,
    vae_frame_rate,
)
from refrain.models.dit.velocity import VelocityOutput

TIMBRE_SECONDS = 30.0  # the release feeds 30 s of (silence) latents to the timbre encoder
TRAIN_RECIPE = {  # the released training recipe: logit-normal t (mean -0.4, std 1), no shift, whole-condition drop 15%
    "shift": 1.0,
    "logit_mean": -0.4,
    "logit_std": 1.0,
    "drop_style_prob": 0.15,
    "drop_lyrics_prob": 0.0,
    "drop_speaker_prob": 0.0,
}


def sampler_defaults(turbo: bool, steps: int = 8) -> dict[str, Any]:
    """The reference pipeline's sampler: Euler on s t / (1 + (s - 1) t), t = 1 .. 1/N, shift 3; APG 7 on
    every step with momentum -0.75 and norm 2.5 over the time axis (turbo: no guidance)."""
    return {
        "steps": steps,
        "solver": "euler",
        "shift": 3.0,
        "sigma_min": 1.0 / steps,
        "guidance": "none" if turbo else "apg",
        "guidance_scale": 1.0 if turbo else 7.0,
        "guidance_interval": 1.0,
        "apg_momentum": -0.75,
        "apg_norm_threshold": 2.5,
        "apg_dims": [-1],
    }


class AceStep15(nn.Module):
    """The trainable part of ACE-Step 1.5 (transformer + condition encoder) behind refrain's contract."""

    def __init__(
        self,
        transformer: AceStepTransformer1DModel,
        condition_encoder: AceStepConditionEncoder,
        text_side: TextSide | None = None,
        frame_rate: float = 25.0,
        repa_layer: int | None = None,
        turbo: bool | None = None,
        gradient_checkpointing: bool = False,
        train_condition_encoder: bool = True,
        timbre_side: TimbreSide | None = None,
    ) -> None:
        """``timbre_side``: each training song's own timbre reference (``timbre=song``); None = silence."""
        super().__init__()
        layers = len(transformer.layers)
        repa_layer = resolve_repa_layer(
            repa_layer, layers, "pick the block whose output REPA aligns (ACE-Step v1 used 8 of 24)"
        )
        self.transformer = transformer
        self.condition_encoder = condition_encoder
        self.text_side = text_side
        self.timbre_side = timbre_side
        self.frame_rate = float(frame_rate)
        self.repa_layer = int(repa_layer)
        config = transformer.config
        self.turbo = (
            bool(config.is_turbo or config.model_version == "turbo") if turbo is None else bool(turbo)
        )
        self.condition_encoder.requires_grad_(train_condition_encoder)
        self.enable_gradient_checkpointing(gradient_checkpointing)
        self._memo: dict[int, tuple[Any, Tensor]] = {}
        self._null_memo: tuple[AceStepConditioning, AceStepConditioning] | None = None

    # ----- the contract -----
    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.audio_acoustic_hidden_dim)

    @property
    def hidden_size(self) -> int:
        return int(self.transformer.config.hidden_size)

    @property
    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(
            name="ace15_turbo" if self.turbo else "ace15",
            latent_channels=self.latent_channels,
            hidden_size=self.hidden_size,
            repa_layer=self.repa_layer,
            conditioning_type=AceStepConditioning,
            supports_context=True,
            native_reference=True,
            cfg_drops=frozenset({"all", "context"}),
            fsdp_wrap=("diffusers.models.transformers.ace_step_transformer.AceStepTransformerBlock",),
            latent_layout="BTC",
            sampler_defaults=sampler_defaults(self.turbo),
            loss_preset=dict(TRAIN_RECIPE),
            lora_root="transformer",
            bundle_class="ace15",
        )

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        set_gradient_checkpointing((self.transformer, self.condition_encoder), enabled)

    def noise(self, seed: int, frames: int) -> Tensor:
        """Drawn (1, T, C) like the reference pipeline's ``generator``, returned as (1, C, T)."""
        return seeded_noise(seed, self.latent_channels, frames, "BTC")

    def conditioning_from_batch(self, batch: Mapping[str, Any]) -> AceStepConditioning:
        """Cached Qwen3 states when the batch has them (``ace15_*`` keys), else encoded online from its text;
        with a ``timbre_side`` each song's own timbre reference (``ace15_timbre``), else the silence latent."""
        frame_mask = batch["frame_mask"].bool()
        timbre = batch.get("ace15_timbre")
        if timbre is None and self.timbre_side is not None:
            timbre = self.timbre_side.batch(batch, frame_mask.device)
        if "ace15_style" in batch:
            return AceStepConditioning(
                batch["ace15_style"],
                batch["ace15_style_mask"].bool(),
                batch["ace15_lyrics"],
                batch["ace15_lyrics_mask"].bool(),
                frame_mask,
                timbre=timbre,
            )
        if self.text_side is None:
            raise RefrainInputError(
                "DiT batch",
                "has no cached ACE-Step 1.5 conditioning and the backbone has no text encoder",
                "load the backbone from its release folder (--checkpoint_dir) or cache the conditioning",
            )
        metas = batch_metas(batch, frame_mask, self.frame_rate)  # a reference task's instruction included
        style, style_mask, lyrics, lyrics_mask = self.text_side.encode(
            list(batch["prompts"]), list(batch["lyrics_text"]), metas, frame_mask.device
        )
        return AceStepConditioning(style, style_mask, lyrics, lyrics_mask, frame_mask, timbre=timbre)

    def timbre_from_audio(self, audio: Tensor, vae: nn.Module) -> Tensor:
        """(1, R, C) timbre reference of (channels, samples) audio, as ``AceStepPipeline(reference_audio=)``."""
        return reference_latents(audio, vae)

    def prompt_conditioning(
        self,
        prompt: str,
        lyrics: str,
        frames: int,
        total: int | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        reference: Tensor | None = None,
        instruction: str | None = None,
        timbre: Tensor | None = None,
    ) -> AceStepConditioning:
        """One song for the sampler: ``frames`` valid of ``total``, its duration in the metas, the repaint
        instruction when a context latent is given (as the reference pipeline's repaint task does), or
        ``instruction`` with a whole ``reference`` track (lego/complete, see ``ace15_tasks``); ``timbre``
        (1, R, C) from ``timbre_from_audio`` (None = the silence latent)."""
        if self.text_side is None:
            raise RefrainInputError(
                "AceStep15",
                "has no text encoder to encode a prompt",
                "load it from its release folder (load_ace15) so text_encoder/ and tokenizer/ are found",
            )
        total = frames if total is None else total
        task = instruction or ("text2music" if context is None else "repaint")
        meta = SongMeta(duration=frames / self.frame_rate, task=task)
        device = self.condition_encoder.null_condition_emb.device
        style, lyric = self.text_side.encode_one(prompt, lyrics, meta, device)
        ones = lambda t: torch.ones(1, t.shape[1], dtype=torch.bool, device=device)  # noqa: E731
        valid = (torch.arange(total, device=device) < frames)[None]
        return AceStepConditioning(
            style,
            ones(style),
            lyric,
            ones(lyric),
            valid,
            context=context,
            context_mask=context_mask,
            reference=reference,
            timbre=None if timbre is None else timbre.to(device),
        )

    def reference_conditioning(
        self, prompt: str, lyrics: str, reference: Tensor, target: str, instrument: str
    ) -> AceStepConditioning:
        """One song of role family ``target`` (stem, rest) for ``instrument`` that fits the whole
        ``reference`` track (1, C, T): the release's lego/complete task (``ace15_tasks``)."""
        instruction = reference_instruction(target, instrument)
        frames = reference.shape[-1]
        return self.prompt_conditioning(prompt, lyrics, frames, reference=reference, instruction=instruction)

    def null_lyrics(self, cond: AceStepConditioning) -> AceStepConditioning:
        """``cond`` with every song's lyrics replaced by the empty lyric prompt (text2sample's "lyrics always
        null"): the release has no lyrics-only drop, so null is the input it gets for a song without lyrics."""
        if self._null_memo is not None and self._null_memo[0] is cond:
            return self._null_memo[1]  # the sampler passes one conditioning object every step
        if self.text_side is None:
            raise RefrainInputError(
                "AceStep15",
                "has no text encoder to encode the empty lyrics of a lyrics-free variant",
                "load it from its release folder (load_ace15) so text_encoder/ and tokenizer/ are found",
            )
        device = cond.lyrics.device
        empty = self.text_side.empty_lyrics(device).to(cond.lyrics.dtype)
        b = cond.batch_size
        mask = torch.ones(b, empty.shape[1], dtype=torch.bool, device=device)
        out = replace(cond, lyrics=empty.expand(b, -1, -1).contiguous(), lyrics_mask=mask)
        self._null_memo = (cond, out)
        return out

    # ----- the network -----
    def silence(self, frames: int, batch: int, like: Tensor) -> Tensor:
        """(B, frames, C) of the release's silence latent, tiled when the song is longer than it."""
        return silence(self.condition_encoder.silence_latent, frames, batch, like)

    def encode_condition(self, cond: AceStepConditioning) -> Tensor:
        """The packed cross-attention sequence (B, L, D); dropped samples get the null embedding."""
        key = id(cond)
        if (
            not torch.is_grad_enabled()
            and not self.training
            and key in self._memo
            and self._memo[key][0] is cond
        ):
            return self._memo[key][1]
        dtype = self.transformer.dtype
        b = cond.batch_size
        if cond.timbre is not None:
            timbre = cond.timbre.to(dtype)
        else:
            timbre = self.silence(math.ceil(TIMBRE_SECONDS * self.frame_rate), b, cond.style.to(dtype))
        encoded, _ = self.condition_encoder(
            text_hidden_states=cond.style.to(dtype),
            text_attention_mask=cond.style_mask,
            lyric_hidden_states=cond.lyrics.to(dtype),
            lyric_attention_mask=cond.lyrics_mask,
            refer_audio_acoustic_hidden_states_packed=timbre.contiguous(),
            refer_audio_order_mask=torch.arange(b, device=timbre.device),
        )
        null = self.condition_encoder.null_condition_emb.to(encoded.dtype).expand_as(encoded)
        encoded = torch.where(cond.dropped[:, None, None].to(encoded.device), null, encoded)
        if not torch.is_grad_enabled() and not self.training:
            self._memo = {key: (cond, encoded)}
        return encoded

    def context_latents(self, cond: AceStepConditioning, like: Tensor) -> Tensor:
        """(B, T, 2C): source latent (silence where generated) and the chunk mask (1 = generate)."""
        return context_latents(cond, self.condition_encoder.silence_latent, like)

    def forward(
        self, x: Tensor, sigma: Tensor, cond: AceStepConditioning, return_hidden: bool = False
    ) -> VelocityOutput:
        """x: (B, C, T) noisy latent at sigma (B,) or scalar; velocity (B, C, T), zero on padding."""
        check_latent_input(
            x,
            self.latent_channels,
            "AceStep15 input",
            "encode audio with the release's vae/ (64 channels at 25 frames/s)",
        )
        cond.validate(x)
        dtype = self.transformer.dtype
        h = x.transpose(1, 2).to(dtype)
        t = sigma.to(h.device).reshape(-1).expand(x.shape[0]).to(dtype)
        captured: list[Tensor] = []
        hook = None
        if return_hidden:
            block = self.transformer.layers[self.repa_layer - 1]
            hook = block.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            out = self.transformer(
                hidden_states=h,
                timestep=t,
                timestep_r=t,
                encoder_hidden_states=self.encode_condition(cond),
                context_latents=self.context_latents(cond, h),
                return_dict=False,
            )[0]
        finally:
            if hook is not None:
                hook.remove()
        velocity = out.transpose(1, 2) * cond.frame_mask[:, None, :].to(out.dtype)
        hidden = (
            frames_to_tokens(captured[-1], x.shape[-1], self.transformer.patch_size) if captured else None
        )
        return VelocityOutput(velocity=velocity.to(x.dtype), hidden=hidden)


def load_ace15(
    checkpoint_dir: str | Path,
    repa_layer: int | None = None,
    turbo: bool | None = None,
    gradient_checkpointing: bool = False,
    train_condition_encoder: bool = True,
    dtype: str | None = None,
    dataset_path: str | Path | None = None,
    timbre: str = "silence",
) -> AceStep15:
    """The backbone with the release's weights, from a local folder, offline (``conf/model/dit/ace15*.yaml``).

    With ``dataset_path`` the frozen Qwen3 outputs of every song are cached under
    ``<dataset_path>/cache/ace15_text`` the first time they are computed (see ``TextSide``).
    ``timbre``: ``silence`` (the release's silence latent) or ``song`` (each crop's own song, cached under
    ``<dataset_path>/cache/ace15_timbre``; see ``ace15_timbre``).
    """
    root = check_release_folder(checkpoint_dir)
    torch_dtype = getattr(torch, dtype) if dtype else None
    weights = {"torch_dtype": torch_dtype, "use_safetensors": True}  # never a pickled .bin
    transformer = AceStepTransformer1DModel.from_pretrained(root / "transformer", **weights)
    encoder = AceStepConditionEncoder.from_pretrained(root / "condition_encoder", **weights)
    frame_rate = vae_frame_rate(root, 25.0, 48000, 1920)
    cache = text_cache_dir(dataset_path) if dataset_path else None
    text = TextSide(root, cache_dir=cache) if (root / "text_encoder").is_dir() else None
    return AceStep15(
        transformer,
        encoder,
        text,
        frame_rate,
        repa_layer,
        turbo,
        gradient_checkpointing,
        train_condition_encoder,
        timbre_side(timbre, root, dataset_path),
    )


def build_ace15(
    transformer: Mapping[str, Any],
    condition_encoder: Mapping[str, Any],
    frame_rate: float = 25.0,
    repa_layer: int | None = None,
    turbo: bool | None = None,
    text_dir: str | None = None,
) -> AceStep15:
    """Random-initialised from the two config dicts (what a bundle records; its weights are loaded after)."""
    return AceStep15(
        AceStepTransformer1DModel.from_config(public_config(transformer)),
        AceStepConditionEncoder.from_config(public_config(condition_encoder)),
        TextSide(text_dir) if text_dir else None,
        frame_rate,
        repa_layer,
        turbo,
    )
