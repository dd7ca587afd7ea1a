"""DiffRhythm sentence alignment on the latent frame grid, including random crops."""

from __future__ import annotations

import math

import pytest
import torch

from refrain.text.alignment import align_sentences


def test_basic_placement_and_padding() -> None:
    grid = align_sentences([(0.5, [5, 6, 2]), (2.0, [7, 2])], num_frames=30, frame_rate=10.0)
    assert grid.dtype == torch.long and grid.shape == (30,)
    expected = [0] * 30
    expected[5:8] = [5, 6, 2]
    expected[20:22] = [7, 2]
    assert grid.tolist() == expected


@pytest.mark.parametrize("crop_start", [0.0, 1.3, 4.75, 7.2, 9.99])
def test_sentence_lands_at_its_frame_under_crops(crop_start: float) -> None:
    frame_rate = 21.533  # 44.1 kHz / 2048 hop, as in DiffRhythm
    sentences = [(3.0, [9, 2]), (10.0, [4, 5, 6, 2]), (12.0, [8, 2])]
    grid = align_sentences(sentences, num_frames=300, frame_rate=frame_rate, crop_start=crop_start)
    frame = math.floor((10.0 - crop_start) * frame_rate)
    assert grid[frame : frame + 4].tolist() == [4, 5, 6, 2]
    if crop_start > 3.0:  # the 3 s line began before the crop: dropped whole
        assert grid[:frame].tolist() == [0] * frame
    else:
        early = math.floor((3.0 - crop_start) * frame_rate)
        assert grid[early : early + 2].tolist() == [9, 2]
    later = math.floor((12.0 - crop_start) * frame_rate)
    assert grid[later : later + 2].tolist() == [8, 2]


def test_overrun_pushes_next_sentence_right() -> None:
    # first sentence occupies frames 10..15, the second would start at 12: it starts at 16 instead
    grid = align_sentences([(1.0, [3, 4, 5, 6, 7, 2]), (1.2, [8, 9, 2])], num_frames=25, frame_rate=10.0)
    assert grid[10:16].tolist() == [3, 4, 5, 6, 7, 2]
    assert grid[16:19].tolist() == [8, 9, 2]
    assert grid[19:].tolist() == [0] * 6


def test_tokens_past_the_window_are_cut_and_order_is_by_time() -> None:
    grid = align_sentences([(2.0, [7, 8, 9, 2]), (0.0, [5, 2])], num_frames=22, frame_rate=10.0)
    assert grid[:2].tolist() == [5, 2]
    assert grid[20:].tolist() == [7, 8]
    assert align_sentences([(5.0, [4, 2])], num_frames=10, frame_rate=10.0).tolist() == [0] * 10


def test_float_error_does_not_shift_a_frame() -> None:
    grid = align_sentences([(0.29, [4, 2])], num_frames=40, frame_rate=100.0)
    assert grid[29].item() == 4


def test_invalid_arguments() -> None:
    assert align_sentences([], num_frames=0, frame_rate=10.0).shape == (0,)
    with pytest.raises(ValueError):
        align_sentences([(0.0, [0, 2])], num_frames=10, frame_rate=10.0)
    with pytest.raises(ValueError):
        align_sentences([], num_frames=10, frame_rate=0.0)
