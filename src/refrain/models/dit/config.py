"""The sizes of refrain's DiT in one frozen dataclass: what conf/model/dit/*.yaml sets and a bundle stores.

``DiffusionTransformer(config)`` reads nothing else about its shape, so the config a run prints, the
manifest of an exported bundle and the module built from either are the same object. A bundle written
before the dataclass existed stored these fields flat beside the constructor; ``upgrade_dit_args``
reads that shape too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from refrain.errors import RefrainInputError


@dataclass(frozen=True)
class DiTConfig:
    """Every size and architectural switch of ``DiffusionTransformer`` (defaults: the mid-size preset)."""

    latent_channels: int = 64  # the VAE's latent channels (conf: read from the VAE bundle)
    hidden_size: int = 1024
    num_layers: int = 12
    num_heads: int = 16
    intermediate_size: int | None = None  # None = LLaMA's 8/3 d rounded to 256
    text_dim: int = 384  # hidden size of the style-prompt encoder
    lyric_vocab_size: int = 1024  # >= len(phoneme_vocab.json)
    lyric_dim: int = 512
    lyric_conv_layers: int = 4
    lyric_kernel_size: int = 7
    speaker_dim: int | None = None  # None = no speaker input
    use_context: bool = True  # reference latent + mask channel (masked-span training, repaint/extend)
    repa_layer: int = 4  # REPA reads the hidden state after this many blocks
    qk_norm: bool = True
    shared_adaln: bool = True  # adaLN-single: one modulation for all blocks
    style_cross_attention: bool = True  # False: the pooled style reaches blocks through adaLN only
    rope_theta: float = 10000.0
    # Self-attention reaches at most attention_window // 2 frames either way (None = the whole sequence).
    # Set it to about twice the training crop: a DiT trained on short crops then samples a long song with
    # the distances it learned, instead of attending across distances it never saw (which flattens it).
    attention_window: int | None = None
    # Latent frames per transformer token (ACE-Step 1.5 merges 2). Attention then costs patch_size^2 less
    # and every other layer patch_size less; the velocity is still predicted for every frame.
    patch_size: int = 1
    norm_eps: float = 1e-6
    dropout: float = 0.0
    timestep_scale: float = 1000.0
    frequency_embedding_size: int = 256
    zero_init_output: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.repa_layer <= self.num_layers:
            raise RefrainInputError(
                "model.dit.config.repa_layer",
                f"{self.repa_layer} is outside [0, num_layers={self.num_layers}]",
                "pick the block whose output REPA aligns (ACE-Step: 8 of 24)",
            )
        if self.attention_window is not None and self.attention_window < 2:
            raise RefrainInputError(
                "model.dit.config.attention_window",
                f"{self.attention_window} frames is no window",
                "use null (whole sequence) or a frame count >= 2, e.g. twice data.max_frames",
            )
        if self.patch_size < 1:
            raise RefrainInputError(
                "model.dit.config.patch_size",
                f"{self.patch_size} latent frames per token",
                "use 1 (one token per latent frame) or a small integer such as 2 or 4",
            )
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise RefrainInputError(
                "model.dit.config.num_heads",
                f"hidden_size {self.hidden_size} / num_heads {self.num_heads} is not an even integer",
                "choose num_heads so that the head size is even (RoPE rotates pairs)",
            )

    @classmethod
    def coerce(cls, value: DiTConfig | Mapping[str, Any]) -> DiTConfig:
        """A DiTConfig from itself, a plain mapping (a manifest) or a Hydra node; unknown keys are named."""
        if isinstance(value, cls):
            return value
        if hasattr(value, "_metadata"):  # an OmegaConf node
            from omegaconf import OmegaConf

            value = OmegaConf.to_container(value, resolve=True)  # type: ignore[assignment]
        items = {str(k): v for k, v in dict(value).items() if k != "_target_"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(items) - known)
        if unknown:
            raise RefrainInputError(
                f"model.dit.config.{unknown[0]}",
                "is not a DiT size",
                f"use the fields of DiTConfig: {', '.join(sorted(known))}",
            )
        return cls(**items)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def upgrade_dit_args(arguments: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments with the complete DiTConfig spelled out (every field, defaults included).

    Older bundles stored the sizes flat beside the constructor; they are read the same way. Applied to
    its own output it changes nothing, so a manifest always holds the whole config.
    """
    rest = dict(arguments)
    if "config" in rest:
        config = rest.pop("config")
    else:
        sizes = {f.name for f in fields(DiTConfig)}
        config = {k: rest.pop(k) for k in list(rest) if k in sizes}
    return {"config": {**DiTConfig().to_dict(), **dict(config)}, **rest}  # checked when the model is built
