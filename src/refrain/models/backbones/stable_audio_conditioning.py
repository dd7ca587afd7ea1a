"""Stable Audio Open's conditioning as one batch object, and the frozen T5 side that fills it.

What the released model is conditioned on, before its projection model runs: T5 last hidden states of the
prompt (padded to the tokenizer's ``model_max_length`` as the release was trained; padded positions become
zero after projection, not masked), and two numbers, ``seconds_start`` (where the clip starts in its song)
and ``seconds_total`` (diffusers' ``audio_end_in_s``: where it ends).

There is one CFG switch, ``drop_style``: the whole cross-attention input (prompt and both seconds tokens)
becomes zeros, which is the unconditional branch of diffusers' ``StableAudioPipeline`` and the release's
training dropout; the seconds still reach the model through its global token. ``drop_lyrics`` may only be
set together with it (the model has no lyrics input) and ``validate`` says so in one line. There is no
context latent: ``context`` stays None and modes that need one are refused by the backbone spec.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.models.conditioning_batch import DROP_FLAGS, BatchConditioning


@dataclass
class StableAudioConditioning(BatchConditioning):
    """A batch: B items, S prompt tokens, D T5 width, T latent frames."""

    text: Tensor  # (B, S, D) T5 last hidden states of the prompt
    text_mask: Tensor  # (B, S) bool, True = a real token
    seconds_start: Tensor  # (B,) float seconds
    seconds_total: Tensor  # (B,) float seconds
    frame_mask: Tensor  # (B, T) bool, True = valid frame
    context: Tensor | None = None  # always None: the model has no context input
    context_mask: Tensor | None = None
    speaker: Tensor | None = None  # always None (the loss reads it)
    drop_style: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool: whole condition
    drop_lyrics: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool: only with drop_style
    drop_context: Tensor = field(default=None)  # type: ignore[assignment]  # (B,) bool

    def __post_init__(self) -> None:
        self.fill_drop_flags(self.frame_mask.shape[0], self.frame_mask.device)

    @property
    def dropped(self) -> Tensor:
        return self.drop_style

    def validate(self, latent: Tensor | None = None) -> None:
        b = self.batch_size
        if latent is not None:
            self.check_latent(latent, "build the conditioning for the same batch and crop as the latent")
        expect = {
            "text_mask": (b, self.text.shape[1]),
            "seconds_start": (b,),
            "seconds_total": (b,),
            "drop_style": (b,),
            "drop_lyrics": (b,),
            "drop_context": (b,),
        }
        self.check_shapes(expect, "build every conditioning tensor from the same batch")
        if bool((self.drop_lyrics & ~self.drop_style).any()):
            raise RefrainInputError(
                "StableAudioConditioning.drop_lyrics",
                "Stable Audio Open has no lyrics input to drop alone",
                "drop the whole condition (drop_style) or nothing; use one guidance scale",
            )

    @classmethod
    def cat(cls, items: Sequence[StableAudioConditioning]) -> StableAudioConditioning:
        """Concatenate along the batch; prompts of different lengths are right-padded with zero states.

        Items encoded by one tokenizer all have its ``model_max_length`` tokens, so nothing is padded then.
        """
        if not items:
            raise RefrainInputError(
                "StableAudioConditioning.cat", "empty list", "pass at least one conditioning"
            )
        length = max(c.text.shape[1] for c in items)
        out: dict[str, Any] = {
            "text": torch.cat([F.pad(c.text, (0, 0, 0, length - c.text.shape[1])) for c in items]),
            "text_mask": torch.cat([F.pad(c.text_mask, (0, length - c.text_mask.shape[1])) for c in items]),
        }
        for name in ("seconds_start", "seconds_total", "frame_mask", *DROP_FLAGS):
            out[name] = torch.cat([getattr(c, name) for c in items])
        if any(c.context is not None for c in items):
            raise RefrainInputError(
                "StableAudioConditioning.context",
                "Stable Audio Open has no context input",
                "sample without a source latent (text2music, retake, audio2audio)",
            )
        return cls(**out)


class T5Side:
    """Tokenizer + T5 encoder of a Stable Audio Open folder (``tokenizer/``, ``text_encoder/``), loaded lazily.

    Frozen and outside the backbone's module tree (not trained, saved or averaged by EMA); it moves to the
    batch's device on first use. Each prompt is encoded alone, padded to ``model_max_length`` as the release
    was trained, so a prompt's states never depend on its batch-mates. With a ``cache_dir`` each prompt's
    states are written once (safetensors, under a fingerprint of the encoder's files) and read back
    unchanged, so cached and online batches are identical and later epochs skip the encoder.
    """

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None) -> None:
        self.root = Path(root)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._tokenizer: Any = None
        self._encoder: Any = None
        self._fingerprint: str | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> T5Side:
        return self  # frozen and shared: an EMA copy of the backbone uses the same encoder

    def __reduce__(self) -> tuple[Any, ...]:
        return (T5Side, (str(self.root), str(self.cache_dir) if self.cache_dir else None))

    def _load(self, device: torch.device) -> tuple[Any, Any]:
        if self._encoder is None:
            from transformers import AutoTokenizer, T5EncoderModel

            for sub in ("tokenizer", "text_encoder"):
                if not (self.root / sub).is_dir():
                    raise RefrainInputError(
                        self.root / sub,
                        "missing from the Stable Audio Open folder",
                        "point model.dit.checkpoint_dir at the release folder (transformer/, projection_model/, "
                        "text_encoder/, tokenizer/, vae/)",
                    )
            self._tokenizer = AutoTokenizer.from_pretrained(self.root / "tokenizer")
            encoder = T5EncoderModel.from_pretrained(self.root / "text_encoder", use_safetensors=True)
            self._encoder = encoder.eval().requires_grad_(False)
        if next(self._encoder.parameters()).device != device:
            self._encoder.to(device)
        return self._tokenizer, self._encoder

    @torch.no_grad()
    def encode_one(self, prompt: str, device: torch.device) -> tuple[Tensor, Tensor]:
        """(1, S, D) float32 T5 states and (1, S) bool mask of one prompt, from the cache when it has them."""
        cached = self._cache_file(prompt)
        if cached is not None and cached.is_file():
            from safetensors.torch import load_file

            stored = load_file(str(cached))
            return stored["states"].to(device), stored["mask"].to(device)
        tokenizer, encoder = self._load(device)
        tokens = tokenizer(
            [prompt],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        states, mask = encoder(ids, attention_mask=mask)[0].float(), mask.bool()
        if cached is not None:
            _store(cached, {"states": states, "mask": mask})
        return states, mask

    def encode(self, prompts: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """(B, S, D) float32 T5 states and (B, S) bool mask, S = the tokenizer's ``model_max_length``."""
        pairs = [self.encode_one(prompt, device) for prompt in prompts]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    def _cache_file(self, prompt: str) -> Path | None:
        if self.cache_dir is None:
            return None
        if self._fingerprint is None:  # the encoder's identity: its configs, tokenizer files and weight sizes
            parts = []
            for sub in ("text_encoder", "tokenizer"):
                for file in sorted((self.root / sub).iterdir()) if (self.root / sub).is_dir() else []:
                    parts.append(f"{sub}/{file.name}:{file.stat().st_size}")
                    if file.suffix == ".json":
                        parts.append(file.read_text())
            self._fingerprint = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
        key = hashlib.sha256(f"{self._fingerprint}\0{prompt}".encode()).hexdigest()[:32]
        return self.cache_dir / self._fingerprint / f"{key}.safetensors"


def _store(path: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    from refrain.fileio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
