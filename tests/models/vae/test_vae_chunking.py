"""Chunked encode/decode of long audio agrees with one-shot; the crossfade weights sum to one."""

from __future__ import annotations

import pytest
import torch

from refrain.models.vae.chunking import _ramp_weights, chunk_starts, crossfade_chunks
from refrain.models.vae.oobleck import OobleckVAE


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_chunk_starts_cover_everything_with_full_chunks() -> None:
    assert chunk_starts(10, 20, 4) == [0]
    starts = chunk_starts(100, 20, 4)
    assert starts[0] == 0 and starts[-1] == 80
    assert all(b - a <= 16 for a, b in zip(starts, starts[1:], strict=False))


def test_regular_neighbours_weights_sum_to_one() -> None:
    left = _ramp_weights(20, 8, fade_in=False, fade_out=True)
    right = _ramp_weights(20, 8, fade_in=True, fade_out=False)
    torch.testing.assert_close(left[-8:] + right[:8], torch.ones(8))
    assert left[-2:].eq(0).all() and right[:2].eq(0).all()  # outer quarter of the overlap is dropped


def test_crossfade_of_an_identity_process_is_exact() -> None:
    signal = torch.randn(2, 3, 97)
    out = crossfade_chunks(lambda a, b: signal[..., a:b], 97, 20, 8, scale=1, out_device="cpu")
    torch.testing.assert_close(out, signal)
    latents = torch.randn(1, 4, 33)
    upsampled = crossfade_chunks(
        lambda a, b: latents[..., a:b].repeat_interleave(16, -1), 33, 10, 4, scale=16, out_device="cpu"
    )
    torch.testing.assert_close(upsampled, latents.repeat_interleave(16, -1))


def test_chunked_codec_matches_one_shot(tiny_vae: OobleckVAE) -> None:
    generator = torch.Generator().manual_seed(3)
    t = torch.arange(44100 * 3) / 44100
    audio = torch.stack(
        [0.4 * torch.sin(2 * torch.pi * 220 * t), 0.1 * torch.randn(t.shape, generator=generator)]
    )
    audio = tiny_vae.pad_to_hop(audio.unsqueeze(0))
    with torch.no_grad():
        posterior = tiny_vae.encode(audio)
        decoded = tiny_vae.decode(posterior.mean)
    chunked = tiny_vae.encode_chunked(audio, chunk_seconds=0.75, overlap_seconds=0.25)
    assert chunked.mean.shape == posterior.mean.shape
    assert relative_error(chunked.mean, posterior.mean) < 1e-3
    assert relative_error(chunked.std, posterior.std) < 1e-3
    redecoded = tiny_vae.decode_chunked(
        posterior.mean, chunk_seconds=0.75, overlap_seconds=0.25, length=audio.shape[-1] - 5
    )
    assert redecoded.shape[-1] == audio.shape[-1] - 5
    assert relative_error(redecoded, decoded[..., :-5]) < 1e-3


def test_short_input_is_one_chunk(tiny_vae: OobleckVAE, music: torch.Tensor) -> None:
    with torch.no_grad():
        one_shot = tiny_vae.encode(music).mean
    assert torch.equal(tiny_vae.encode_chunked(music, chunk_seconds=5.0).mean, one_shot)


@pytest.mark.parametrize("overlap", [0.0, 0.05])
def test_chunked_codec_runs_with_little_or_no_overlap(
    tiny_vae: OobleckVAE, music: torch.Tensor, overlap: float
) -> None:
    latents = tiny_vae.encode_chunked(music, chunk_seconds=0.3, overlap_seconds=overlap).mode()
    audio = tiny_vae.decode_chunked(latents, chunk_seconds=0.3, overlap_seconds=overlap)
    assert audio.shape == music.shape and torch.isfinite(audio).all()


def test_the_demo_presets_short_encode_overlap_matches_one_shot_encoding() -> None:
    """model/vae=demo encodes with 0.15 s of overlap (decodes with 0.5 s): its encoder sees ~5 latent frames
    either way, so once the crossfade drops the outer quarter of each overlap the chunks agree exactly."""
    from hydra.utils import instantiate

    from refrain.config import compose_config

    torch.manual_seed(0)
    vae = instantiate(compose_config(["model/vae=demo"]).model.vae).eval()
    assert vae.encode_overlap_seconds == 0.15 and vae.overlap_seconds == 0.5
    audio = vae.pad_to_hop(
        0.3 * torch.randn(1, 2, int(44100 * 5.5), generator=torch.Generator().manual_seed(1))
    )
    with torch.no_grad():
        one_shot = vae.encode(audio).mean
    chunked = vae.encode_chunked(audio).mean  # 2 s chunks, the preset's encode overlap
    assert relative_error(chunked, one_shot) < 1e-5
    wider = vae.encode_chunked(audio, overlap_seconds=0.5).mean
    assert relative_error(chunked, wider) < 1e-5
    too_short = vae.encode_chunked(audio, overlap_seconds=0.02).mean  # inside the receptive field: it shows
    assert relative_error(too_short, one_shot) > 1e-4
