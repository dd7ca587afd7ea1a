"""DiT task: the loss falls under a real Trainer, REPA terms, EMA checkpoints, non-finite skips, plots,
binned validation, vocabulary and latent-channel checks, and the learning-rate schedule."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers.resilience_toys import PrebuiltBatches
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from refrain.errors import RefrainInputError
from refrain.losses.flow_matching import FlowMatchingLoss
from refrain.losses.repa import REPALoss
from refrain.models.dit.config import DiTConfig
from refrain.models.dit.transformer import DiffusionTransformer
from refrain.models.teachers import TeacherSpec
from refrain.sampling import CFG
from refrain.tasks.dit_task import DiTTask, FlowValidation
from refrain.training.dit_plotting import SamplePlotter
from refrain.training.ema import EMA
from refrain.training.lr_schedule import WarmupDecay

C, T, TEXT, VOCAB, HOP = 4, 16, 8, 20, 4
STEPS = 60
TEACHERS = {"mert": (24, 6), "mhubert": (10, 5)}  # name -> (frames, dim)


def tiny_dit(seed: int = 0, patch_size: int = 1) -> DiffusionTransformer:
    torch.manual_seed(seed)
    return DiffusionTransformer(
        DiTConfig(
            latent_channels=C,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            text_dim=TEXT,
            lyric_vocab_size=VOCAB,
            lyric_dim=16,
            lyric_conv_layers=1,
            repa_layer=1,
            patch_size=patch_size,
        )
    )


def make_batch(teachers: bool = True, nan: bool = False, seed: int = 0) -> dict[str, Any]:
    """A collated batch following the DiT batch contract (/tmp/dit_batch.md), second item padded."""
    g = torch.Generator().manual_seed(seed)
    b = 2
    frame_mask = torch.arange(T)[None] < torch.tensor([T, T - 5])[:, None]
    mean = torch.randn(b, C, T, generator=g) * frame_mask[:, None]
    if nan:
        mean[0, 0, 3] = float("nan")
    batch: dict[str, Any] = {
        "latent_mean": mean,
        "latent_std": torch.full((b, C, T), 0.05),
        "frame_mask": frame_mask,
        "lyrics": torch.randint(1, VOCAB, (b, T), generator=g) * frame_mask,
        "style": torch.randn(b, 5, TEXT, generator=g),
        "style_mask": torch.tensor([[True] * 5, [True] * 3 + [False] * 2]),
        "teacher_features": {},
        "teacher_masks": {},
        "keys": ["song_a", "song_b"],
        "prompts": ["calm acoustic, 68 bpm", "upbeat synth pop"],
        "lyrics_text": ["first line\nsecond line", ""],
        "crop_start": torch.zeros(b),
    }
    if teachers:
        for name, (frames, dim) in TEACHERS.items():
            # teacher features are a fixed function of the latent, as real ones are of the audio
            proj = torch.randn(C, dim, generator=g)
            feats = torch.nn.functional.interpolate(mean, size=frames, mode="linear").transpose(1, 2) @ proj
            batch["teacher_features"][name] = feats
            batch["teacher_masks"][name] = torch.ones(b, frames, dtype=torch.bool)
    return batch


def loader(batches: list[dict[str, Any]]) -> DataLoader:
    return DataLoader(PrebuiltBatches(batches), batch_size=None, collate_fn=lambda x: x)


def make_task(tmp: Path, seed: int = 0, **kwargs: Any) -> DiTTask:
    specs = {
        name: TeacherSpec(name=name, checkpoint_dir=str(tmp / name), sample_rate=16000, feature_dim=dim)
        for name, (_, dim) in TEACHERS.items()
    }
    plot = {"num_steps": 3, "guidance": CFG(), "guidance_scale": 2.0, "guidance_interval": 1.0}
    plot.update(kwargs.pop("plot", {}))
    options: dict[str, Any] = {
        "loss": FlowMatchingLoss(shift=3.0, masked_span_prob=0.2),
        "optimizer": partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.0),
        "lr_schedule": WarmupDecay(warmup_steps=5, decay="cosine", min_lr_ratio=0.3),
        "repa": partial(REPALoss, teachers=specs, projector_dim=32, weight=1.0),
        "ema": partial(EMA, decay=0.9),
        "validation": FlowValidation(bins=4),
        "plotter": SamplePlotter(tmp, kwargs.get("vae_bundle"), **plot),
    }
    patch_size = kwargs.pop("patch_size", 1)
    options.update(kwargs)
    return DiTTask(tiny_dit(seed, patch_size), **options)


def make_trainer(
    tmp: Path, steps: int, callbacks: list[pl.Callback] | None = None, logger: Any = False
) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=logger,
        callbacks=callbacks or [],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        log_every_n_steps=1,
        default_root_dir=tmp,
    )


class History(pl.Callback):
    """Every logged training scalar, per step."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        for name, value in trainer.callback_metrics.items():
            if name.startswith("train/"):
                self.values.setdefault(name, []).append(float(value))


def tiny_vae_bundle(out: Path) -> Path:
    from diffusers import AutoencoderOobleck

    from refrain.bundles.vae import save_vae_bundle

    torch.manual_seed(0)
    vae = AutoencoderOobleck(
        encoder_hidden_size=2 * C,
        downsampling_ratios=[2, 2],
        channel_multiples=[1, 2],
        decoder_channels=8,
        decoder_input_channels=C,
        audio_channels=2,
        sampling_rate=8000,
    )
    return save_vae_bundle(out, vae, {"model": {"vae": {"chunk_seconds": 0.004, "overlap_seconds": 0.001}}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real Trainer run on a fixed batch: 60 steps, TensorBoard, a plot at the last step."""
    tmp = tmp_path_factory.mktemp("dit_run")
    task = make_task(tmp, vae_bundle=tiny_vae_bundle(tmp / "bundle"), every_plot_step=STEPS)
    batch = make_batch()
    before = {k: float(v) for k, v in task.binned_validation(batch).items()}
    history = History()
    logger = TensorBoardLogger(str(tmp), name="tb")
    trainer = make_trainer(tmp, STEPS, [history], logger)
    trainer.fit(task, train_dataloaders=loader([batch] * STEPS))
    after = {k: float(v) for k, v in task.binned_validation(batch).items()}
    return {
        "task": task,
        "trainer": trainer,
        "history": history.values,
        "before": before,
        "after": after,
        "batch": batch,
        "tmp": tmp,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_loss_falls_on_a_fixed_batch(trained: dict[str, Any]) -> None:
    history = trained["history"]
    assert {"train/flow", "train/repa/mert", "train/repa/mhubert", "train/repa", "train/loss"} <= set(history)
    assert len(history["train/flow"]) == STEPS
    # fixed-noise validation of the EMA weights, before vs after training
    assert trained["after"]["flow"] < 0.75 * trained["before"]["flow"], (trained["before"], trained["after"])
    flow = history["train/flow"]
    assert _mean(flow[-10:]) < 0.8 * _mean(flow[:10])


def test_a_dit_of_two_frame_tokens_learns_through_the_trainer(tmp_path: Path) -> None:
    """patch_size 2 in the real task: the flow and REPA terms (read per frame) fall, and the padded item's
    padding starts inside a token (T - 5 valid frames)."""
    task = make_task(tmp_path, patch_size=2, plotter=None)
    batch = make_batch()
    before = float(task.binned_validation(batch)["flow"])
    history = History()
    make_trainer(tmp_path, 40, [history]).fit(task, train_dataloaders=loader([batch] * 40))
    assert float(task.binned_validation(batch)["flow"]) < 0.75 * before
    for name in ("train/flow", "train/repa"):
        assert _mean(history.values[name][-8:]) < 0.9 * _mean(history.values[name][:8]), name


def test_repa_terms_fall_when_teachers_are_given(trained: dict[str, Any]) -> None:
    for name in TEACHERS:
        values = trained["history"][f"train/repa/{name}"]
        assert min(values) >= 0.0 and max(values) <= 2.0
        assert _mean(values[-10:]) < 0.7 * _mean(values[:10]), name


def test_repa_is_skipped_cleanly_without_teacher_features(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    terms = task.compute_loss(make_batch(teachers=False))
    assert set(terms) == {"flow", "loss"}
    terms["loss"].backward()
    grads = [p.grad for p in task.repa.projectors.parameters()]
    assert all(g is not None and float(g.abs().sum()) == 0.0 for g in grads)  # used (DDP-safe), unchanged
    plain = make_task(tmp_path, repa=None)
    assert plain.repa is None and set(plain.compute_loss(make_batch())) == {"flow", "loss"}


def test_ema_is_updated_per_step_and_restored_from_a_checkpoint(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    task, trainer = trained["task"], trained["trainer"]
    assert int(task.ema.num_updates) == STEPS
    path = tmp_path / "dit.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert any(k.startswith("ema.shadow.") for k in checkpoint["state_dict"])
    fresh = make_task(tmp_path, seed=7)
    fresh.load_state_dict(checkpoint["state_dict"])
    fresh.on_load_checkpoint(checkpoint)
    from refrain.tasks.dit_task import batch_conditioning

    batch = make_batch(teachers=False, seed=3)
    x, sigma = torch.randn(2, C, T), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        want = task.sampling_model()(x, sigma, batch_conditioning(batch)).velocity
        got = fresh.sampling_model()(x, sigma, batch_conditioning(batch)).velocity
        live = task.model(x, sigma, batch_conditioning(batch)).velocity
    assert torch.equal(want, got)
    assert not torch.allclose(want, live)  # the EMA is its own state, not a copy of the live weights
    assert int(fresh.ema.num_updates) == STEPS and fresh._last_plot_step == STEPS


def test_plot_at_the_end_writes_audio_png_lyrics_and_tensorboard(trained: dict[str, Any]) -> None:
    folder = trained["tmp"] / "plots" / f"step_{STEPS:06d}"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        [
            "lyrics.txt",
            "spectrograms.png",
            "sample_0.flac",
            "sample_1.flac",
            "reference_0.flac",
            "reference_1.flac",
        ]
    )
    audio, rate = sf.read(folder / "sample_1.flac", always_2d=True)
    assert rate == 8000 and audio.shape == ((T - 5) * HOP, 2)  # valid frames only, decoded by the bundle
    assert (
        "calm acoustic, 68 bpm" in (folder / "lyrics.txt").read_text()
        and "second line" in (folder / "lyrics.txt").read_text()
    )
    assert list((trained["tmp"] / "tb").rglob("events.out.tfevents.*"))


def test_plot_without_a_vae_writes_latents_only(tmp_path: Path) -> None:
    task = make_task(tmp_path, plot={"guidance": None})
    folder = task.plot(3, make_batch())
    assert sorted(p.name for p in folder.iterdir()) == ["latents.png", "lyrics.txt"]
    assert task.plotter.said_no_vae


def test_binned_validation_one_value_per_bin_fixed_noise(trained: dict[str, Any]) -> None:
    task, batch = trained["task"], trained["batch"]
    first, second = task.binned_validation(batch), task.binned_validation(batch)
    bins = [k for k in first if k.startswith("flow_bin_")]
    assert bins == ["flow_bin_0.00_0.25", "flow_bin_0.25_0.50", "flow_bin_0.50_0.75", "flow_bin_0.75_1.00"]
    assert all(torch.equal(first[k], second[k]) for k in first)
    metrics = trained["trainer"].validate(task, dataloaders=loader([batch]), verbose=False)[0]
    assert sorted(k for k in metrics if k.startswith("val/flow_bin_")) == [f"val/{k}" for k in bins]
    assert math.isclose(metrics["val/flow"], float(first["flow"]), rel_tol=1e-5)


def test_nonfinite_loss_skips_the_step_and_is_counted(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    snapshots: list[torch.Tensor] = []

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            snapshots.append(torch.cat([p.detach().flatten().clone() for p in task.model.parameters()]))

    history = History()
    trainer = make_trainer(tmp_path, 3, [Snapshot(), history])
    with pytest.warns(UserWarning, match="non-finite DiT loss"):
        trainer.fit(task, train_dataloaders=loader([make_batch(), make_batch(nan=True), make_batch()]))
    assert task.nonfinite_skips == 1 and trainer.global_step == 3
    assert int(task.ema.num_updates) == 2  # the skipped step does not move the EMA either
    assert torch.equal(snapshots[0], snapshots[1]) and not torch.equal(snapshots[1], snapshots[2])
    assert all(torch.isfinite(s).all() for s in snapshots)
    assert history.values["train/nonfinite_skips"][-1] == 1.0


def test_phoneme_vocab_larger_than_the_embedding_is_a_one_line_error(tmp_path: Path) -> None:
    from refrain.text.vocab import PhonemeVocab

    PhonemeVocab([f"p{i}" for i in range(VOCAB)]).save(tmp_path / "phoneme_vocab.json")
    task = make_task(tmp_path, dataset_path=tmp_path)
    with pytest.raises(RefrainInputError, match="lyric_vocab_size") as error:
        task.setup("fit")
    assert "\n" not in str(error.value)
    make_task(tmp_path, dataset_path=tmp_path / "missing").setup("fit")  # no dataset yet: nothing to check


def test_vae_bundle_with_other_latent_channels_is_rejected(tmp_path: Path) -> None:
    from diffusers import AutoencoderOobleck

    from refrain.bundles.vae import save_vae_bundle

    vae = AutoencoderOobleck(
        encoder_hidden_size=12,
        downsampling_ratios=[2, 2],
        channel_multiples=[1, 2],
        decoder_channels=8,
        decoder_input_channels=6,
        audio_channels=2,
        sampling_rate=8000,
    )
    bundle = save_vae_bundle(tmp_path / "bundle6", vae, {})
    with pytest.raises(RefrainInputError, match="latent_channels=6"):
        make_task(tmp_path, vae_bundle=bundle).setup("fit")


def test_warmup_then_cosine_or_linear_decay() -> None:
    cosine = WarmupDecay(warmup_steps=10, total_steps=110, decay="cosine", min_lr_ratio=0.1)
    assert [cosine.factor(s) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert (
        cosine.factor(10) == 1.0
        and math.isclose(cosine.factor(60), 0.55)
        and math.isclose(cosine.factor(110), 0.1)
    )
    linear = WarmupDecay(warmup_steps=0, total_steps=100, decay="linear", min_lr_ratio=0.0)
    assert np.allclose([linear.factor(s) for s in (0, 25, 100, 500)], [1.0, 0.75, 0.0, 0.0])
    assert WarmupDecay(warmup_steps=2, decay="constant").factor(10**6) == 1.0
    with pytest.raises(RefrainInputError, match="decay"):
        WarmupDecay(decay="exp")


def test_an_all_failed_batch_is_passed_over(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    empty = make_batch()
    for key in ("latent_mean", "latent_std", "frame_mask", "lyrics", "style", "style_mask"):
        empty[key] = empty[key][:0]
    assert task.training_step(empty, 0) is None
    assert task.validation_step(empty, 0) is None and task.nonfinite_skips == 0


def test_activation_offload_gives_the_same_loss_and_gradients(tmp_path: Path) -> None:
    """save_on_cpu only moves where saved activations live; the numbers must not change."""
    results = []
    for offload in (False, True):
        task = make_task(tmp_path, activation_offload=offload)
        torch.manual_seed(0)
        with task._saved_activations():
            loss = task.compute_loss(make_batch())["loss"]
        loss.backward()
        results.append(
            (loss.detach(), [p.grad.clone() for p in task.model.parameters() if p.grad is not None])
        )
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert isinstance(
        make_task(tmp_path, activation_offload=True)._saved_activations(), torch.autograd.graph.save_on_cpu
    )
    assert torch.equal(loss_a, loss_b)
    assert len(grads_a) == len(grads_b) > 0 and all(
        torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True)
    )
