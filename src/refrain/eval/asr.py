"""Lyric transcription with a local Whisper folder (``transformers``), for WER/PER of generated songs.

Songs are mixed to mono, resampled to Whisper's rate and transcribed in 30 s windows (Whisper's input
length); the window texts are joined. Nothing is downloaded: the folder holds config, weights in
safetensors, the tokenizer and the feature extractor, as ``save_pretrained`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from refrain.audio.resample import resample
from refrain.eval.embedders import _require_folder, folder_fingerprint


class WhisperTranscriber:
    """``transcribe(mono, sample_rate) -> text`` with greedy decoding (deterministic)."""

    def __init__(
        self, folder: str | Path, device: str = "cpu", language: str | None = None, max_new_tokens: int = 224
    ) -> None:
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

        path = _require_folder("--whisper", folder)
        self.model = WhisperForConditionalGeneration.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True
        ).to(device)
        self.model.eval()
        self.features = WhisperFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        # the decoder prompt (start, language, task, no-timestamps) shares the model's target length
        limit = int(self.model.config.max_target_positions) - 8
        self.device, self.language, self.max_new_tokens = device, language, min(max_new_tokens, limit)
        self.sample_rate = int(self.features.sampling_rate)
        self.window = int(self.features.chunk_length) * self.sample_rate
        self.fingerprint = folder_fingerprint(path)

    @torch.no_grad()
    def transcribe(self, mono: np.ndarray, sample_rate: int) -> str:
        wave = np.asarray(mono, dtype=np.float32)
        if sample_rate != self.sample_rate:
            wave = resample(wave[None], sample_rate, self.sample_rate)[0]
        windows = [wave[i : i + self.window] for i in range(0, max(1, wave.size), self.window)]
        inputs = self.features(windows, sampling_rate=self.sample_rate, return_tensors="pt")
        kwargs = {"language": self.language} if self.language else {}
        ids = self.model.generate(
            inputs.input_features.to(self.device),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            **kwargs,
        )
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return " ".join(t.strip() for t in texts if t.strip())
