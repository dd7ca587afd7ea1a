"""Stable Audio Open as a refrain backbone: diffusers' ``StableAudioDiTModel`` + ``StableAudioProjectionModel``.

The released model is a v-prediction network under EDM preconditioning with sigma_data = 1: on
x_EDM = x0 + sigma n it sees c_in x_EDM with c_in = 1 / sqrt(sigma^2 + 1) at time t = (2 / pi) atan(sigma),
and its output F gives the denoised estimate D = c_skip x_EDM + c_out F with c_skip = 1 / (sigma^2 + 1),
c_out = -sigma / sqrt(sigma^2 + 1) (diffusers' ``CosineDPMSolverMultistepScheduler``). refrain's flow state
x_s = (1 - s) x0 + s n is the same point scaled: sigma = s / (1 - s), x_EDM = x_s / (1 - s). Writing
r = sqrt(s^2 + (1 - s)^2), the wrapper feeds the network x_s / r (= c_in x_EDM) at t = (2 / pi) atan2(s, 1 - s)
and returns v = (x_s - D) / s = ((2 s - 1) x_s + r F) / r^2 = noise - x0, finite on all of [0, 1] (s = 1 is
sigma = infinity). So refrain's solvers, guidance and flow-matching loss keep their one convention; the
flow loss is the release's v-loss weighted by 1 / r^2, a factor in [1, 2].

Conditioning (``stable_audio_conditioning``): T5 states of the prompt, ``seconds_start`` and
``seconds_total`` through the projection model, as the pipeline does; CFG drops the whole cross-attention
input to zeros. The network has no context input, so repaint/extend/StemGen are refused by the spec.
Padded frames are masked out of self-attention (the model's ``attention_mask``), so an item's output does
not depend on its batch-mates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import StableAudioDiTModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.models.backbone import BackboneSpec, seeded_noise
from refrain.models.backbones.common import (
    check_latent_input,
    check_release_layout,
    has_release_layout,
    public_config,
    resolve_repa_layer,
    set_gradient_checkpointing,
    vae_frame_rate,
)
from refrain.models.backbones.stable_audio_conditioning import StableAudioConditioning, T5Side
from refrain.models.dit.velocity import VelocityOutput

LAYOUT = ("transformer", "projection_model", "text_encoder", "tokenizer", "vae")
FRAME_RATE = 44100 / 2048  # the release's VAE: 44.1 kHz, hop 2048
SIGMA_MIN, SIGMA_MAX = 0.3, 500.0  # the release's EDM sampling range
TRAIN_RECIPE = {  # stable-audio-tools: t uniform in cosine time (logit(s) has std pi/2), 10% condition dropout
    "shift": 1.0,
    "logit_mean": 0.0,
    "logit_std": math.pi / 2,
    "drop_style_prob": 0.1,
    "drop_lyrics_prob": 0.0,
    "drop_context_prob": 0.0,
    "drop_speaker_prob": 0.0,
    "masked_span_prob": 0.0,
}
SAMPLER_DEFAULTS = {  # refrain's Euler over the release's sigma range (0.3 .. infinity), CFG 7 on every step
    "steps": 100,
    "solver": "euler",
    "shift": 1.0,
    "sigma_min": SIGMA_MIN / (1 + SIGMA_MIN),
    "guidance": "cfg",
    "guidance_scale": 7.0,
    "guidance_interval": 1.0,
}


def flow_to_edm(x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """(x_EDM, sigma_EDM) of the flow state x_s at s in [0, 1): x_s / (1 - s) and s / (1 - s)."""
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
    return x / _bcast(1 - s, x), s / (1 - s)


def edm_to_flow(x_edm: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(x_s, s) of the EDM state x0 + sigma n: x_EDM / (1 + sigma) and sigma / (1 + sigma)."""
    sigma = torch.as_tensor(sigma, dtype=x_edm.dtype, device=x_edm.device)
    return x_edm / _bcast(1 + sigma, x_edm), sigma / (1 + sigma)


def edm_time(s: Tensor) -> Tensor:
    """The network's time input (2 / pi) atan(sigma_EDM), written so that s = 1 gives 1."""
    return torch.atan2(s, 1 - s) * (2 / math.pi)


def input_scale(s: Tensor) -> Tensor:
    """r = sqrt(s^2 + (1 - s)^2): the network sees x_s / r, which is c_in x_EDM (sigma_data 1)."""
    return torch.sqrt(s**2 + (1 - s) ** 2)


def velocity_from_output(x: Tensor, s: Tensor, output: Tensor) -> Tensor:
    """noise - x0 from the network's v-output F at flow state x_s: ((2 s - 1) x_s + r F) / r^2.

    The same as (x_s - D) / s with the EDM denoiser D = c_skip x_EDM + c_out F, but finite at s = 0 and 1.
    """
    s = _bcast(s, x)
    r = input_scale(s)
    return ((2 * s - 1) * x + r * output) / r**2


def _bcast(value: Tensor, like: Tensor) -> Tensor:
    return value.reshape(-1, *([1] * (like.dim() - 1))) if value.dim() else value


class StableAudioOpen(nn.Module):
    """The trainable part of Stable Audio Open (DiT + projection model) behind refrain's contract."""

    def __init__(
        self,
        transformer: StableAudioDiTModel,
        projection_model: StableAudioProjectionModel,
        text_side: T5Side | None = None,
        frame_rate: float = FRAME_RATE,
        repa_layer: int | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        layers = len(transformer.transformer_blocks)
        repa_layer = resolve_repa_layer(
            repa_layer, layers, "pick the block whose output REPA aligns (8 of 24 is ACE-Step v1's choice)"
        )
        self.transformer = transformer
        self.projection_model = projection_model
        self.text_side = text_side
        self.frame_rate = float(frame_rate)
        self.repa_layer = int(repa_layer)
        self.enable_gradient_checkpointing(gradient_checkpointing)

    # ----- the contract -----
    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @property
    def hidden_size(self) -> int:
        return int(self.transformer.inner_dim)

    @property
    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec(
            name="stable_audio_open",
            latent_channels=self.latent_channels,
            hidden_size=self.hidden_size,
            repa_layer=self.repa_layer,
            conditioning_type=StableAudioConditioning,
            supports_context=False,
            cfg_drops=frozenset({"all"}),
            fsdp_wrap=("diffusers.models.transformers.stable_audio_transformer.StableAudioDiTBlock",),
            sampler_defaults=dict(SAMPLER_DEFAULTS),
            loss_preset=dict(TRAIN_RECIPE),
            lora_root="transformer",
            bundle_class="stable_audio_open",
        )

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        set_gradient_checkpointing((self.transformer,), enabled)

    def noise(self, seed: int, frames: int) -> Tensor:
        """(1, C, T) drawn like the pipeline's ``generator`` (its initial EDM state is this times
        ``init_noise_sigma``)."""
        return seeded_noise(seed, self.latent_channels, frames)

    def conditioning_from_batch(self, batch: Mapping[str, Any]) -> StableAudioConditioning:
        """Cached T5 states when the batch has them (``sao_text``/``sao_text_mask``), else encoded online.

        ``seconds_start`` is the crop's start in its song; ``seconds_total`` is the batch's value when it has
        one, else where the crop ends (the pipeline's ``audio_end_in_s``).
        """
        frame_mask = batch["frame_mask"].bool()
        device = frame_mask.device
        if "sao_text" in batch:
            text, text_mask = batch["sao_text"].float(), batch["sao_text_mask"].bool()
        elif self.text_side is None:
            raise RefrainInputError(
                "DiT batch",
                "has no cached T5 states and the Stable Audio Open backbone has no text encoder",
                "load the backbone from its release folder (model.dit.checkpoint_dir) or cache sao_text",
            )
        else:
            text, text_mask = self.text_side.encode(list(batch["prompts"]), device)
        b = frame_mask.shape[0]
        start = batch.get("crop_start")
        start = torch.zeros(b, device=device) if start is None else start.float().to(device)
        total = batch.get("seconds_total")
        if total is None:
            total = start + frame_mask.sum(dim=1).float() / self.frame_rate
        return StableAudioConditioning(text, text_mask, start, total.float().to(device), frame_mask)

    def prompt_conditioning(
        self,
        prompt: str,
        lyrics: str,
        frames: int,
        total: int | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> StableAudioConditioning:
        """One song for refrain's sampler: ``frames`` valid of ``total``, seconds 0 .. frames / frame rate (the
        pipeline's ``audio_start_in_s`` / ``audio_end_in_s``). The model has no lyrics input: they are unused."""
        if self.text_side is None:
            raise RefrainInputError(
                "StableAudioOpen",
                "has no text encoder to encode a prompt",
                "load it from its release folder (load_stable_audio) so text_encoder/ and tokenizer/ are found",
            )
        if context is not None:
            raise RefrainInputError(
                "context",
                "Stable Audio Open has no context input",
                "sample without a source latent (text2music, retake, audio2audio)",
            )
        total = frames if total is None else total
        device = next(self.projection_model.parameters()).device
        text, mask = self.text_side.encode([prompt], device)
        valid = (torch.arange(total, device=device) < frames)[None]
        seconds = lambda v: torch.tensor([float(v)], device=device)  # noqa: E731
        return StableAudioConditioning(text, mask, seconds(0.0), seconds(frames / self.frame_rate), valid)

    # ----- the network -----
    def condition_states(self, cond: StableAudioConditioning, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(cross-attention input (B, S + 2, D), global input (B, 1, 2 D)), as the pipeline builds them."""
        projection = self.projection_model
        text = projection(text_hidden_states=cond.text.to(dtype)).text_hidden_states
        text = text * cond.text_mask[..., None].to(text.dtype)
        seconds = projection(start_seconds=cond.seconds_start, end_seconds=cond.seconds_total)
        start, end = seconds.seconds_start_hidden_states, seconds.seconds_end_hidden_states
        cross = torch.cat([text, start, end], dim=1)
        cross = torch.where(cond.dropped[:, None, None].to(cross.device), torch.zeros_like(cross), cross)
        return cross, torch.cat([start, end], dim=2)

    def forward(
        self, x: Tensor, sigma: Tensor, cond: StableAudioConditioning, return_hidden: bool = False
    ) -> VelocityOutput:
        """x: (B, C, T) flow state at sigma (B,) or scalar in [0, 1]; velocity (B, C, T), zero on padding."""
        check_latent_input(
            x,
            self.latent_channels,
            "StableAudioOpen input",
            "encode audio with the release's vae/ (64 channels at 21.5 frames/s)",
        )
        cond.validate(x)
        if bool(cond.context_present().any()):
            raise RefrainInputError(
                "context",
                "Stable Audio Open has no context input",
                "sample without a source latent (text2music, retake, audio2audio)",
            )
        dtype = self.transformer.dtype
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        s = sigma.to(device=x.device, dtype=work).reshape(-1).expand(x.shape[0])
        r = input_scale(s)[:, None, None]
        cross, global_states = self.condition_states(cond, dtype)
        frames = x.shape[-1]
        rotary = get_1d_rotary_pos_embed(
            self.transformer.config.attention_head_dim // 2,
            frames + 1,
            use_real=True,
            repeat_interleave_real=False,
        )
        rotary = tuple(part.to(x.device) for part in rotary)
        mask = None if bool(cond.frame_mask.all()) else cond.frame_mask.to(x.device)
        captured: list[Tensor] = []
        hook = None
        if return_hidden:
            block = self.transformer.transformer_blocks[self.repa_layer - 1]
            hook = block.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            out = self.transformer(
                (x.to(work) / r).to(dtype),
                edm_time(s).to(dtype),
                encoder_hidden_states=cross,
                global_hidden_states=global_states,
                rotary_embedding=rotary,
                attention_mask=mask,
                return_dict=False,
            )[0]
        finally:
            if hook is not None:
                hook.remove()
        velocity = velocity_from_output(x.to(work), s, out.to(work)) * cond.frame_mask[:, None, :].to(work)
        hidden = captured[-1][:, 1:] if captured else None  # drop the prepended global token
        return VelocityOutput(velocity=velocity.to(x.dtype), hidden=hidden)


def check_release_folder(root: str | Path | None) -> Path:
    """The folder, or a one-line error naming the first part of diffusers' layout it lacks."""
    return check_release_layout(
        root,
        LAYOUT,
        "point model.dit.checkpoint_dir at a Stable Audio Open folder in diffusers' layout",
        f"a Stable Audio Open folder holds {', '.join(s + '/' for s in LAYOUT)}: download the diffusers "
        "release (stabilityai/stable-audio-open-1.0)",
    )


def is_release_folder(root: str | Path | None) -> bool:
    """True for a folder in diffusers' Stable Audio Open layout."""
    return has_release_layout(root, LAYOUT)


def release_frame_rate(root: Path) -> float:
    """Latent frames per second of the folder's VAE (sampling rate / product of its strides)."""
    return vae_frame_rate(root, FRAME_RATE, 44100, 2048)


def _from_pretrained(cls: Any, folder: Path, dtype: torch.dtype | None) -> Any:
    try:
        return cls.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as error:
        raise RefrainInputError(
            folder,
            f"cannot be read as {cls.__name__} ({str(error).splitlines()[0][:160]})",
            "download the release's safetensors weights (refrain never loads pickled .bin files)",
        ) from None


def load_stable_audio(
    checkpoint_dir: str | Path | None,
    repa_layer: int | None = None,
    gradient_checkpointing: bool = False,
    dtype: str | None = None,
    dataset_path: str | Path | None = None,
) -> StableAudioOpen:
    """The backbone with the release's weights from a local folder, offline (``conf/model/dit/stable_audio_open``).

    With ``dataset_path`` the frozen T5 states of every prompt are cached under
    ``<dataset_path>/cache/stable_audio_t5`` the first time they are computed (see ``T5Side``).
    """
    root = check_release_folder(checkpoint_dir)
    torch_dtype = getattr(torch, dtype) if dtype else None
    transformer = _from_pretrained(StableAudioDiTModel, root / "transformer", torch_dtype)
    projection = _from_pretrained(StableAudioProjectionModel, root / "projection_model", torch_dtype)
    cache = Path(dataset_path) / "cache" / "stable_audio_t5" if dataset_path else None
    text = T5Side(root, cache) if (root / "text_encoder").is_dir() else None
    return StableAudioOpen(
        transformer, projection, text, release_frame_rate(root), repa_layer, gradient_checkpointing
    )


def build_stable_audio(
    transformer: Mapping[str, Any],
    projection_model: Mapping[str, Any],
    frame_rate: float = FRAME_RATE,
    repa_layer: int | None = None,
    text_dir: str | None = None,
) -> StableAudioOpen:
    """Random-initialised from the two config dicts (what a bundle records; its weights are loaded after)."""
    return StableAudioOpen(
        StableAudioDiTModel.from_config(public_config(transformer)),
        StableAudioProjectionModel.from_config(public_config(projection_model)),
        T5Side(text_dir) if text_dir else None,
        frame_rate,
        repa_layer,
    )


def bundle_spec(model: StableAudioOpen, text_dir: str | None = None) -> dict[str, Any]:
    """The registry spec a bundle stores to rebuild ``model`` with ``build_stable_audio``."""
    return {
        "class": "stable_audio_open",
        "transformer": public_config(model.transformer.config),
        "projection_model": public_config(model.projection_model.config),
        "frame_rate": model.frame_rate,
        "repa_layer": model.repa_layer,
        "text_dir": text_dir,
    }


def spec_from_loader_args(args: dict[str, Any]) -> dict[str, Any]:
    """A run's ``load_stable_audio`` arguments -> ``build_stable_audio``'s (the configs read from the folder).

    The registry's upgrade hook for checkpoints trained with ``model/dit=stable_audio_open``; idempotent.
    """
    if "checkpoint_dir" not in args:
        return args
    root = check_release_folder(args["checkpoint_dir"])

    def read(sub: str) -> dict[str, Any]:
        return public_config(json.loads((root / sub / "config.json").read_text()))

    return {
        "transformer": read("transformer"),
        "projection_model": read("projection_model"),
        "frame_rate": release_frame_rate(root),
        "repa_layer": args.get("repa_layer"),
        "text_dir": str(root.resolve()) if (root / "text_encoder").is_dir() else None,
    }
