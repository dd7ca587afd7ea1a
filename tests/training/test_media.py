"""log_media: the one place audio, an image and text reach TensorBoard (and W&B)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from refrain.audio.spectrogram import save_spectrogram_png
from refrain.training.media import Clip, TextTable, log_media


def test_tensorboard_gets_every_clip_the_image_and_the_text(tmp_path: Path) -> None:
    rate = 8000
    wave = np.stack([np.sin(np.arange(rate) / 5.0)] * 2).astype(np.float32)
    broken = wave.copy()
    broken[0, :10] = np.nan
    png = save_spectrogram_png(tmp_path / "s.png", [("a", wave)], rate)
    tb = TensorBoardLogger(tmp_path / "tb", name="run")
    clips = [Clip("audio/clean", "clean", wave), Clip("audio/broken", "broken", broken)]
    table = TextTable("samples/lyrics", "key: a\nline two", ["key"], [["a"]])
    log_media(
        [tb, CSVLogger(tmp_path / "csv")], 3, clips=clips, sample_rate=rate, image=("spec", png), text=table
    )
    tb.experiment.flush()
    events = EventAccumulator(str(Path(tb.log_dir))).Reload()
    assert set(events.Tags()["audio"]) == {"audio/clean", "audio/broken"}
    assert events.Tags()["images"] == ["spec"] and events.Audio("audio/broken")[0].step == 3
    assert "samples/lyrics/text_summary" in events.Tags()["tensors"]


def test_no_sample_rate_means_no_audio(tmp_path: Path) -> None:
    tb = TensorBoardLogger(tmp_path / "tb", name="run")
    log_media([tb], 0, clips=[Clip("audio/x", "x", np.zeros((1, 100), np.float32))], sample_rate=None)
    tb.experiment.flush()
    assert EventAccumulator(str(Path(tb.log_dir))).Reload().Tags()["audio"] == []
