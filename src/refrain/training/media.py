"""The one place a run's media reaches its loggers: audio clips, an image and a text table go to
TensorBoard (add_audio/add_image/add_text) and to W&B (log_audio/log_image/log_text). Other loggers get
nothing; the files written beside the checkpoints are the record every run keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger


@dataclass(frozen=True)
class Clip:
    """One audio clip: its TensorBoard tag, its W&B caption and (channels, samples) audio."""

    tag: str
    caption: str
    audio: np.ndarray


@dataclass(frozen=True)
class TextTable:
    """Rows of text: a W&B table, and one markdown block (``markdown``) on TensorBoard."""

    tag: str
    markdown: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


def log_media(
    loggers: Sequence[Logger],
    step: int,
    *,
    clips: Sequence[Clip] = (),
    sample_rate: int | None = None,
    audio_key: str = "audio",
    image: tuple[str, Path] | None = None,
    text: TextTable | None = None,
) -> None:
    """Send ``clips`` (under ``audio_key`` on W&B), ``image`` (tag, PNG) and ``text`` to every logger that
    shows media. Non-finite samples are zeroed (one bad sample must not break the logger)."""
    clips = list(clips) if sample_rate is not None else []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment
            for clip in clips:
                mono = torch.from_numpy(np.nan_to_num(clip.audio.mean(0, keepdims=True)))
                writer.add_audio(clip.tag, mono.clamp(-1, 1), step, sample_rate)
            if image is not None:
                import matplotlib.pyplot as plt

                writer.add_image(image[0], plt.imread(str(image[1]))[..., :3], step, dataformats="HWC")
            if text is not None:
                writer.add_text(text.tag, text.markdown.replace("\n", "  \n"), step)
        elif isinstance(logger, WandbLogger):
            if clips:
                logger.log_audio(
                    audio_key,
                    [np.nan_to_num(c.audio).T for c in clips],
                    step=step,
                    sample_rate=[sample_rate] * len(clips),
                    caption=[c.caption for c in clips],
                )
            if image is not None:
                logger.log_image(image[0], [str(image[1])], step=step)
            if text is not None:
                logger.log_text(text.tag, columns=text.columns, data=text.rows, step=step)
