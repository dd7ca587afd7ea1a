"""``attention_window``: self-attention within ``window // 2`` frames either way on sequences longer than it.

Why it exists: the CPU demo's DiT learns on 6 s crops and samples 20 s songs; attending across distances it
never saw flattened those songs (README, issue 19). The window leaves every sequence up to its length, and so
every training crop of a run that sets it to twice ``data.max_frames``, exactly as before.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers.lora import inputs, perturb_trainable, plain_cond, tiny_dit

from refrain.errors import RefrainInputError
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer


def windowed_twin(model: DiffusionTransformer, window: int | None) -> DiffusionTransformer:
    """The same weights with another ``attention_window``."""
    twin = DiffusionTransformer(dataclasses.replace(model.config, attention_window=window))
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def velocity(model: DiffusionTransformer, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    cond = plain_cond(batch=x.shape[0], frames=x.shape[-1])
    cond.lyrics.zero_()  # the lyric convolution would also carry frames sideways
    with torch.no_grad():
        return model(x, sigma, cond).velocity


def test_a_window_as_long_as_the_sequence_changes_nothing() -> None:
    model = tiny_dit().eval()
    perturb_trainable(model)
    x, sigma = inputs(batch=2, frames=24)
    assert torch.equal(velocity(windowed_twin(model, 24), x, sigma), velocity(model, x, sigma))


def test_a_shorter_window_keeps_far_frames_apart() -> None:
    model = tiny_dit().eval()  # 2 blocks: frame 0 reaches 2 x window // 2 frames at most
    perturb_trainable(model)
    x, sigma = inputs(batch=1, frames=40)
    moved = x.clone()
    moved[..., 0] += 3.0
    windowed = windowed_twin(model, 8)
    reach = 2 * (8 // 2)
    near_w, far_w = (
        (velocity(windowed, moved, sigma) - velocity(windowed, x, sigma))
        .abs()
        .split([reach + 1, 40 - reach - 1], dim=-1)
    )
    assert near_w.amax() > 1e-3 and far_w.amax() == 0
    whole = (velocity(model, moved, sigma) - velocity(model, x, sigma)).abs()
    assert whole[..., reach + 1 :].amax() > 1e-4  # without the window frame 0 reaches every frame


def test_a_window_survives_the_config_round_trip_and_bad_ones_are_one_line() -> None:
    config = DiTConfig(hidden_size=32, num_heads=4, num_layers=1, repa_layer=1, attention_window=2048)
    assert DiTConfig.coerce(config.to_dict()).attention_window == 2048
    legacy = {k: v for k, v in config.to_dict().items() if k != "attention_window"}
    assert DiTConfig.coerce(legacy).attention_window is None  # bundles written before it existed
    with pytest.raises(RefrainInputError, match="attention_window"):
        DiTConfig(attention_window=0)
