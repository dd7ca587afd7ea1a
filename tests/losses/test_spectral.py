"""Stereo multi-resolution STFT loss and mel distance: named terms, zero on equal input, robust to silence."""

from __future__ import annotations

import pytest
import torch
from auraloss.freq import MultiResolutionSTFTLoss

from refrain.losses.spectral import MagnitudeMRSTFTLoss, MagnitudeSTFTLoss, MelDistance, StereoMRSTFTLoss
from refrain.losses.spectral_reference import StereoReference

RATE = 44100


def stereo(seed: int = 0, frames: int = 8192) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(frames) / RATE
    left = 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.02 * torch.randn(frames, generator=generator)
    right = 0.3 * torch.sin(2 * torch.pi * 660 * t) + 0.02 * torch.randn(frames, generator=generator)
    return torch.stack([left, right]).unsqueeze(0)


def test_terms_are_named_and_weighted() -> None:
    loss = StereoMRSTFTLoss(RATE, fft_sizes=(512, 128, 32))
    target = stereo()
    prediction = target + 0.05 * torch.randn_like(target)
    terms = loss(prediction, target)
    assert set(terms) == {"stft_mid", "stft_side", "stft_left", "stft_right", "stft"}
    expected = (terms["stft_mid"] + terms["stft_side"]) / 2 + 0.5 * (terms["stft_left"] + terms["stft_right"])
    assert terms["stft"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(value.item() > 0 for value in terms.values())


@pytest.mark.parametrize("perceptual_weighting", [False, True])
def test_magnitude_loss_equals_auralosss_value_and_gradient(perceptual_weighting: bool) -> None:
    """Skipping the unused phase changes nothing auraloss's MultiResolutionSTFTLoss computes."""
    ffts, hops = [512, 128, 32], [128, 32, 8]
    terms = {"sample_rate": RATE, "perceptual_weighting": perceptual_weighting, "w_sc": 1.0}
    target = stereo()[:, :1]
    gradients, values = [], []
    for loss in (
        MultiResolutionSTFTLoss(ffts, hops, ffts, **terms),
        MagnitudeMRSTFTLoss(ffts, hops, ffts, **terms),
    ):
        prediction = (target + 0.05 * stereo(seed=1)[:, :1]).requires_grad_()
        value = loss(prediction, target)
        value.backward()
        values.append(value.detach())
        gradients.append(prediction.grad)
    torch.testing.assert_close(values[1], values[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-5, atol=1e-9)


STEREO_CASES = {
    "fft bins": ({}, 2, False),
    "a-weighted": ({"perceptual_weighting": True}, 2, False),
    "mel bands": ({"mel_bins": 64}, 2, False),
    "lin-mag term": ({"w_lin_mag": 1.0}, 2, False),
    "no mid/side": ({"mid_side_weight": 0.0}, 2, False),
    "mono": ({}, 1, False),
    "silent side": ({}, 2, True),
}


@pytest.mark.parametrize("case", list(STEREO_CASES))
def test_stereo_loss_equals_the_signal_by_signal_terms(case: str) -> None:
    """The batched loss (filter once, mid/side from the L/R spectra) gives the terms and gradient of one
    auraloss-composed multi-resolution loss per signal (``MagnitudeMRSTFTLoss``, auraloss's own above)."""
    options, channels, mono_as_stereo = STEREO_CASES[case]
    loss = StereoMRSTFTLoss(RATE, **{"fft_sizes": (1024, 256, 32), **options})
    target = stereo()[:, :1].repeat(1, 2, 1) if mono_as_stereo else stereo()[:, :channels]
    target = torch.cat([target, target.flip(-1)])  # two items: norms and means run over the batch
    noise = 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(5))
    results = []
    for module in (StereoReference(loss), loss):
        prediction = (target + noise).requires_grad_()
        terms = module(prediction, target)
        terms["stft"].backward()
        results.append(({k: v.detach() for k, v in terms.items()}, prediction.grad))
    (expected, expected_grad), (terms, grad) = results
    assert set(terms) == set(expected)
    for name in expected:
        torch.testing.assert_close(terms[name], expected[name], rtol=2e-5, atol=1e-7, msg=name)
    # Bins at the magnitude floor carry d log|z| = 1/|z| up to 1e4: rounding differs there (a mid bin is
    # L + R of two spectra instead of the spectrum of L + R), so the gradients agree as a whole; both are
    # as far from the same loss in float64 (A-weighted: 3.4e-3 and 3.5e-3 of its norm).
    assert float((grad - expected_grad).norm() / expected_grad.norm()) < 5e-3


def test_magnitude_stft_keeps_the_phase_when_a_phase_term_reads_it() -> None:
    signal = stereo()[:, 0]
    assert MagnitudeSTFTLoss(256, 64, 256)(signal[:, None], signal[:, None]).item() == 0.0
    assert MagnitudeSTFTLoss(256, 64, 256).stft(signal)[1] is None
    assert MagnitudeSTFTLoss(256, 64, 256, w_phs=1.0).stft(signal)[1] is not None


def test_identical_audio_scores_zero_and_worse_audio_scores_higher() -> None:
    loss = StereoMRSTFTLoss(RATE, fft_sizes=(512, 128))
    target = stereo()
    assert loss(target, target)["stft"].item() == pytest.approx(0.0, abs=1e-6)
    near = loss(target + 0.01 * torch.randn_like(target), target)["stft"]
    far = loss(target + 0.1 * torch.randn_like(target), target)["stft"]
    assert far > near


def test_silent_side_does_not_explode() -> None:
    """A mono song stored as stereo has a zero side; spectral convergence alone would divide by ~0."""
    loss = StereoMRSTFTLoss(RATE, fft_sizes=(512, 128))
    mono = stereo()[:, :1].repeat(1, 2, 1)
    prediction = mono + 0.01 * torch.randn_like(mono)
    terms = loss(prediction, mono)
    assert terms["stft_side"] < 20 and torch.isfinite(terms["stft"])


def test_perceptual_weighting_and_mono() -> None:
    target = stereo()
    prediction = target + 0.05 * torch.randn_like(target)
    weighted = StereoMRSTFTLoss(RATE, fft_sizes=(512, 128), perceptual_weighting=True)(prediction, target)[
        "stft"
    ]
    plain = StereoMRSTFTLoss(RATE, fft_sizes=(512, 128))(prediction, target)["stft"]
    assert torch.isfinite(weighted) and weighted.item() != pytest.approx(plain.item())
    mono_terms = StereoMRSTFTLoss(RATE, fft_sizes=(512, 128))(prediction[:, :1], target[:, :1])
    assert set(mono_terms) == {"stft_ch0", "stft"}


def test_loss_has_gradients() -> None:
    target = stereo()
    prediction = (target + 0.05 * torch.randn_like(target)).requires_grad_(True)
    StereoMRSTFTLoss(RATE, fft_sizes=(256, 64))(prediction, target)["stft"].backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()


def test_mel_distance() -> None:
    mel = MelDistance(RATE, fft_sizes=(1024, 512), n_mels=(64, 32))
    target = stereo()
    assert mel(target, target)["mel"].item() == pytest.approx(0.0, abs=1e-6)
    assert mel(target * 0.5, target)["mel"].item() == pytest.approx(
        10 * torch.log10(torch.tensor(4.0)).item(), rel=1e-3
    )


def _band_scaled(audio: torch.Tensor, low_hz: float, high_hz: float, gain: float) -> torch.Tensor:
    """``audio`` with the FFT bins between ``low_hz`` and ``high_hz`` multiplied by ``gain``."""
    spectrum = torch.fft.rfft(audio)
    frequencies = torch.fft.rfftfreq(audio.shape[-1], 1 / RATE)
    band = (frequencies >= low_hz) & (frequencies < high_hz)
    return torch.fft.irfft(torch.where(band, spectrum * gain, spectrum), n=audio.shape[-1])


def test_mel_bands_equal_auralosss_mel_scaled_loss() -> None:
    """With no band under the floor, ``mel_bins`` is auraloss's own ``scale="mel"`` term on the same bank."""
    ffts, hops = [1024, 256], [256, 64]
    generator = torch.Generator().manual_seed(3)
    target = 0.1 * torch.randn(1, 1, 8192, generator=generator)
    prediction = target + 0.05 * torch.randn(1, 1, 8192, generator=generator)
    ours = MagnitudeMRSTFTLoss(ffts, hops, ffts, sample_rate=RATE, mel_bins=64)
    auralosss = MultiResolutionSTFTLoss(ffts, hops, ffts, sample_rate=RATE)
    for mine, theirs in zip(ours.stft_losses, auralosss.stft_losses, strict=True):
        assert mine.mel_fb.shape[0] == min(64, mine.fft_size // 8)
        theirs.scale, theirs.fb = "mel", mine.mel_fb  # what scale="mel" sets, without librosa
    torch.testing.assert_close(ours(prediction, target), auralosss(prediction, target), rtol=1e-6, atol=0)


def test_mel_bands_weigh_the_middle_octaves_as_the_ear_does() -> None:
    """Doubling 0.5-1 kHz against doubling 11-22 kHz of white noise: on FFT bins the top octave (22x the
    bins) costs 6x more; on mel bands the two octaves cost about the same (1.06x)."""
    target = 0.1 * torch.randn(1, 2, 16384, generator=torch.Generator().manual_seed(4))
    middle, top = _band_scaled(target, 500, 1000, 2.0), _band_scaled(target, 11025, 22051, 2.0)
    linear = StereoMRSTFTLoss(RATE, fft_sizes=(2048, 512))
    mel = StereoMRSTFTLoss(RATE, fft_sizes=(2048, 512), mel_bins=128)
    assert linear(top, target)["stft"] > 3 * linear(middle, target)["stft"]
    assert mel(top, target)["stft"] < 1.5 * mel(middle, target)["stft"]
    assert mel(target, target)["stft"].item() == pytest.approx(0.0, abs=1e-6)


def test_mel_bands_train_and_refuse_a_phase_term() -> None:
    target = stereo()
    prediction = (target + 0.05 * torch.randn_like(target)).requires_grad_(True)
    StereoMRSTFTLoss(RATE, fft_sizes=(512, 64), mel_bins=128)(prediction, target)["stft"].backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all()
    with pytest.raises(ValueError, match="mel bands"):
        MagnitudeSTFTLoss(256, 64, 256, sample_rate=RATE, mel_bins=32, w_phs=1.0).stft(target[:, 0])
    with pytest.raises(ValueError, match="sample_rate"):
        MagnitudeSTFTLoss(256, 64, 256, mel_bins=32)
