"""Spectrogram PNG rows are labelled in Hz, at the rows where those frequencies really are."""

from __future__ import annotations

import numpy as np
import torch

from refrain.audio.spectrogram import label_hz, mel_bin_of, mel_spectrogram

SR = 44100


def test_a_tone_sits_on_the_row_its_frequency_label_names() -> None:
    t = torch.arange(SR // 2) / SR
    for freq in (200.0, 1000.0, 4000.0):
        mel = mel_spectrogram(torch.sin(2 * torch.pi * freq * t), SR, hop_length=512)
        peak = int(mel.mean(dim=-1).argmax())
        assert abs(peak - float(mel_bin_of(np.array([freq]), SR, mel.shape[0])[0])) <= 1.0, freq


def test_rows_are_labelled_in_hz() -> None:
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    label_hz(ax, SR, 128)
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert ax.get_ylabel() == "Hz" and "1k" in labels and "16k" in labels and "100" in labels
    rows = ax.get_yticks()
    assert np.all(np.diff(rows) > 0) and rows[-1] < 128
