"""The frozen text side of ACE-Step 1.5: its prompt formats and the Qwen3 encoder from the release folder.

Two prompts per song, in the formats the released model was trained with: the SFT prompt (an
instruction, the caption and a metadata block with bpm, time signature, key and duration, ending in the
tokenizer's end-of-text marker) goes through the whole Qwen3 encoder; the lyric prompt (language, then the
lyrics) only through its input embedding table, because the condition encoder's lyric encoder
contextualises it. Each prompt is encoded on its own (no padding inside an encoder call), so a song's
conditioning never depends on its batch-mates.

The encoder is held outside the backbone's module tree (``TextSide`` is not an ``nn.Module``): it is
frozen, it is not part of what fine-tuning trains, saves or averages (EMA), and it moves to the batch's
device on first use.

With a ``cache_dir`` the frozen outputs are written once, content-addressed by the encoder and the exact
text: one file per SFT prompt (its Qwen3 states, the only encoder forward) and one per lyric prompt (its
token ids), so a song's states are shared by all its lyric crops. They are read back on every later step
and epoch; ``refrain-encode --ace15`` fills them before training (``refrain.data.ace15_cache``). The cache
stores the very tensors the online path computes, so both give identical batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from refrain.errors import RefrainInputError

INSTRUCTIONS = {
    "text2music": "Fill the audio semantic mask based on the given conditions:",
    "repaint": "Repaint the mask area based on the given conditions:",
}
END = "<|endoftext|>"


@dataclass(frozen=True)
class SongMeta:
    """The metadata block of the SFT prompt; None / empty is written as N/A, duration as whole seconds."""

    duration: float = 30.0
    bpm: int | None = None
    keyscale: str | None = None
    timesignature: str | None = None
    language: str = "en"
    task: str = "text2music"


def sft_prompt(caption: str, meta: SongMeta) -> str:
    """The SFT prompt text: # Instruction, # Caption and # Metas sections."""
    instruction = INSTRUCTIONS.get(meta.task, meta.task)
    instruction = instruction if instruction.endswith(":") else instruction + ":"
    bpm = str(meta.bpm) if meta.bpm is not None and meta.bpm > 0 else "N/A"
    sig = meta.timesignature if meta.timesignature and meta.timesignature.strip() else "N/A"
    key = meta.keyscale if meta.keyscale and meta.keyscale.strip() else "N/A"
    seconds = f"{int(meta.duration)} seconds" if meta.duration and meta.duration > 0 else "30 seconds"
    metas = f"- bpm: {bpm}\n- timesignature: {sig}\n- keyscale: {key}\n- duration: {seconds}\n"
    return "\n\n".join([f"# Instruction\n{instruction}", f"# Caption\n{caption}", f"# Metas\n{metas}{END}\n"])


def lyric_prompt(lyrics: str, language: str = "en") -> str:
    """The lyric prompt text: # Languages and # Lyric sections."""
    return f"# Languages\n{language}\n\n# Lyric\n{lyrics}{END}"


class TextSide:
    """Tokenizer + Qwen3 encoder of an ACE-Step 1.5 folder (``tokenizer/``, ``text_encoder/``), loaded lazily."""

    def __init__(
        self,
        root: str | Path,
        max_text_length: int = 256,
        max_lyric_length: int = 2048,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.max_text_length = max_text_length
        self.max_lyric_length = max_lyric_length
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._tokenizer: Any = None
        self._encoder: Any = None
        self._fingerprint: str | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> TextSide:
        return self  # frozen and shared: an EMA copy of the backbone uses the same encoder

    def __reduce__(self) -> tuple[Any, ...]:
        cache = str(self.cache_dir) if self.cache_dir else None
        return (TextSide, (str(self.root), self.max_text_length, self.max_lyric_length, cache))

    def _load(self, device: torch.device) -> tuple[Any, Any]:
        if self._encoder is None:
            from transformers import AutoModel, AutoTokenizer

            for sub in ("tokenizer", "text_encoder"):
                if not (self.root / sub).is_dir():
                    raise RefrainInputError(
                        self.root / sub,
                        "missing from the ACE-Step 1.5 folder",
                        "point --checkpoint_dir at the release folder (transformer/, condition_encoder/, text_encoder/, tokenizer/, vae/)",
                    )
            self._tokenizer = AutoTokenizer.from_pretrained(self.root / "tokenizer", local_files_only=True)
            encoder = AutoModel.from_pretrained(
                self.root / "text_encoder", local_files_only=True, use_safetensors=True
            )
            self._encoder = encoder.eval().requires_grad_(False)
        if next(self._encoder.parameters()).device != device:
            self._encoder.to(device)
        return self._tokenizer, self._encoder

    @torch.no_grad()
    def encode_one(
        self, caption: str, lyrics: str, meta: SongMeta, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """(1, S, D) SFT-prompt states and (1, L, D) lyric token embeddings of one song."""
        _, encoder = self._load(device)
        states = self.prompt_states(sft_prompt(caption, meta), device)
        ids = self.lyric_ids(lyric_prompt(lyrics, meta.language), device)
        return states, encoder.get_input_embeddings()(ids).float()

    @torch.no_grad()
    def prompt_states(self, sft: str, device: torch.device) -> Tensor:
        """(1, S, D) Qwen3 last hidden states of one SFT prompt: the cached file, else one encoder forward."""
        cached = self.cache_file("prompt", sft)
        if cached is not None and cached.is_file():
            return _load_tensor(cached, "states", device)
        tokenizer, encoder = self._load(device)
        text = tokenizer([sft], truncation=True, max_length=self.max_text_length, return_tensors="pt")
        states = encoder(input_ids=text.input_ids.to(device)).last_hidden_state.float()
        if cached is not None:
            self._store(cached, "states", states)
        return states

    @torch.no_grad()
    def lyric_ids(self, lyric_text: str, device: torch.device) -> Tensor:
        """(1, L) token ids of one lyric prompt (the tokenizer only): the cached file, else tokenized."""
        cached = self.cache_file("lyrics", lyric_text)
        if cached is not None and cached.is_file():
            return _load_tensor(cached, "lyric_ids", device)
        tokenizer, _ = self._load(device)
        ids = tokenizer(
            [lyric_text], truncation=True, max_length=self.max_lyric_length, return_tensors="pt"
        ).input_ids.to(device)
        if cached is not None:
            self._store(cached, "lyric_ids", ids)
        return ids

    @torch.no_grad()
    def empty_lyrics(self, device: torch.device, language: str = "en") -> Tensor:
        """(1, L, D) token embeddings of the empty lyric prompt: what ``AceStepPipeline(lyrics="")`` feeds."""
        tokenizer, encoder = self._load(device)
        ids = tokenizer([lyric_prompt("", language)], return_tensors="pt").input_ids.to(device)
        return encoder.get_input_embeddings()(ids).float()

    def cache_file(self, kind: str, text: str) -> Path | None:
        """``<cache>/<encoder fingerprint>/<kind>/<sha256 of the text>.safetensors`` (kind: prompt, lyrics)."""
        if self.cache_dir is None:
            return None
        if self._fingerprint is None:  # the encoder's identity: its config, tokenizer files and weight sizes
            parts = [str(self.max_text_length), str(self.max_lyric_length)]
            for sub in ("text_encoder", "tokenizer"):
                for file in sorted((self.root / sub).iterdir()):
                    parts.append(f"{sub}/{file.name}:{file.stat().st_size}")
                    if file.suffix == ".json":
                        parts.append(file.read_text())
            self._fingerprint = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
        key = hashlib.sha256(f"{self._fingerprint}\0{kind}\0{text}".encode()).hexdigest()[:32]
        return self.cache_dir / self._fingerprint / kind / f"{key}.safetensors"

    @staticmethod
    def _store(path: Path, name: str, tensor: Tensor) -> None:
        from safetensors.torch import save_file

        from refrain.fileio import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({name: tensor.detach().cpu().contiguous()}, str(tmp))

    def encode(
        self, captions: Sequence[str], lyrics: Sequence[str], metas: Sequence[SongMeta], device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Batched (style, style_mask, lyrics, lyrics_mask), each song encoded alone and right-padded."""
        pairs = [self.encode_one(c, t, m, device) for c, t, m in zip(captions, lyrics, metas, strict=True)]
        style, style_mask = _pad([p[0] for p in pairs])
        lyric, lyric_mask = _pad([p[1] for p in pairs])
        return style, style_mask, lyric, lyric_mask


def _load_tensor(path: Path, name: str, device: torch.device) -> Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))[name].to(device)


def text_cache_dir(dataset_path: str | Path) -> Path:
    """Where a dataset keeps its frozen ACE-Step 1.5 text outputs (training and refrain-encode agree)."""
    return Path(dataset_path) / "cache" / "ace15_text"


def _pad(items: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    length = max(t.shape[1] for t in items)
    out = items[0].new_zeros(len(items), length, items[0].shape[-1])
    mask = torch.zeros(len(items), length, dtype=torch.bool, device=items[0].device)
    for i, t in enumerate(items):
        out[i, : t.shape[1]] = t[0]
        mask[i, : t.shape[1]] = True
    return out, mask
