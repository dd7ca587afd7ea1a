"""Compression-robust VAE training (DiffRhythm's recipe on Stable Audio Open's losses) as a LightningModule.

The VAE sees the MP3-degraded copy of a crop and is trained to reproduce the lossless original.
Generator and discriminator are optimised by hand (manual optimisation): one training step is one
generator update, and only that update advances ``global_step``; the discriminator update that
follows it is not counted, so ``max_steps`` and every step-based cadence mean generator steps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from diffusers import AutoencoderOobleck
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from refrain.errors import RefrainInputError
from refrain.losses.adversarial import discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss
from refrain.losses.metrics import ReconstructionMetrics
from refrain.losses.spectral import MelDistance, StereoMRSTFTLoss
from refrain.models.vae.oobleck import OobleckVAE
from refrain.training.ema import EMA
from refrain.training.vae_listening import VAEPlotter

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
EMAFactory = Callable[[nn.Module, nn.Module], EMA]  # (autoencoder, twin) -> EMA (conf: task.ema, _partial_)
DEFAULT_EMA: EMAFactory = partial(EMA, decay=0.9999)


@dataclass(frozen=True)
class VAEObjective:
    """What the generator is trained on: term weights, when the discriminator joins, sampled or mean
    latents, and whether the encoder trains (DiffRhythm's recipe freezes it: only the decoder adapts)."""

    stft: float = 1.0
    kl: float = 1e-4
    mel: float = 0.0
    adversarial: float = 0.1
    feature_matching: float = 5.0
    adversarial_start_step: int = 0  # reconstruction-only warm-up before the discriminator joins
    sample_posterior: bool = True
    freeze_encoder: bool = False

    def weights(self) -> dict[str, float]:
        """Weight per loss-term name, as the terms are logged."""
        return {
            "stft": self.stft,
            "kl": self.kl,
            "mel": self.mel,
            "adv": self.adversarial,
            "feature_matching": self.feature_matching,
        }


class VAETask(pl.LightningModule):
    """Trains an ``OobleckVAE`` against a multi-scale STFT discriminator; keeps an EMA of the VAE."""

    def __init__(
        self,
        model: OobleckVAE,
        discriminator: nn.Module,
        generator_optimizer: OptimizerFactory,
        discriminator_optimizer: OptimizerFactory,
        generator_scheduler: SchedulerFactory | None = None,
        discriminator_scheduler: SchedulerFactory | None = None,
        spectral_loss: nn.Module | None = None,
        objective: VAEObjective | None = None,
        ema: EMAFactory = DEFAULT_EMA,
        plotter: VAEPlotter | None = None,
        gradient_clip_val: float | None = None,
        validate_with_ema: bool = True,
    ) -> None:
        """``ema(autoencoder, twin)`` builds the EMA the bundle exports; ``plotter`` None = no listening plots."""
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.discriminator = discriminator
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        self.generator_scheduler = generator_scheduler
        self.discriminator_scheduler = discriminator_scheduler
        self.spectral_loss = spectral_loss or StereoMRSTFTLoss(model.sample_rate)
        self.objective = objective or VAEObjective()
        self.mel_loss = MelDistance(model.sample_rate) if self.objective.mel else None
        self.weights = self.objective.weights()
        self.adversarial_start_step = int(self.objective.adversarial_start_step)
        self.freeze_encoder = self.objective.freeze_encoder
        if self.freeze_encoder:
            model.freeze_encoder()
        self.sample_posterior = self.objective.sample_posterior
        self.gradient_clip_val = gradient_clip_val
        self.plotter = plotter
        self.validate_with_ema = validate_with_ema
        twin = AutoencoderOobleck.from_config(model.autoencoder.config)
        self.ema = ema(model.autoencoder, twin)
        self.metrics = ReconstructionMetrics(model.sample_rate)
        self.nonfinite_skips = 0  # read by refrain.training.faults.NonFiniteGuard, which stops a diverged run
        self.skipped_items_epoch = 0
        self.skipped_items_total = 0
        self._sched_g: Any = None
        self._sched_d: Any = None

    # ----- set-up -----
    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        opt_g = self.generator_optimizer(trainable)
        opt_d = self.discriminator_optimizer(self.discriminator.parameters())
        schedulers = []
        self._sched_g = self.generator_scheduler(opt_g) if self.generator_scheduler else None
        self._sched_d = self.discriminator_scheduler(opt_d) if self.discriminator_scheduler else None
        for name, scheduler in (("generator", self._sched_g), ("discriminator", self._sched_d)):
            if scheduler is not None:
                schedulers.append({"scheduler": scheduler, "interval": "step", "name": f"lr/{name}"})
        return [opt_g, opt_d], schedulers

    def on_fit_start(self) -> None:
        if str(self.trainer.precision).startswith("16"):
            raise RefrainInputError(
                "trainer.precision",
                "fp16 loss scaling is not supported for the VAE's GAN training",
                "use bf16-mixed or 32-true",
            )

    def ema_vae(self) -> OobleckVAE:
        """The EMA weights as an ``OobleckVAE`` view (shares the EMA's parameters, registers nothing)."""
        return OobleckVAE(
            self.ema.shadow,
            chunk_seconds=self.model.chunk_seconds,
            overlap_seconds=self.model.overlap_seconds,
            encode_overlap_seconds=self.model.encode_overlap_seconds,
        )

    # ----- training -----
    def _clip(self, parameters: list[nn.Parameter]) -> torch.Tensor:
        """Clip by global norm (``gradient_clip_val``; None = measure only) and return the pre-clip norm."""
        limit = self.gradient_clip_val if self.gradient_clip_val else math.inf
        return torch.nn.utils.clip_grad_norm_(parameters, limit)

    def _skip(self, what: str) -> None:
        self.nonfinite_skips += 1
        rank_zero_warn(
            f"non-finite {what} at step {self.global_step}: update skipped ({self.nonfinite_skips} so far)"
        )

    def _check_batch(self, audio: torch.Tensor) -> None:
        if audio.shape[-1] % self.model.hop_length:
            raise RefrainInputError(
                "data.crop_samples",
                f"{audio.shape[-1]} samples is not a multiple of the VAE hop {self.model.hop_length}",
                f"set data.crop_samples to a multiple of {self.model.hop_length}",
            )

    def _reconstruct(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.freeze_encoder:
            with torch.no_grad():
                posterior = self.model.encode(inputs)
        else:
            posterior = self.model.encode(inputs)
        latents = posterior.sample() if self.sample_posterior else posterior.mode()
        return self.model.decode(latents), self.model.kl_loss(posterior)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.skipped_items_epoch += int(batch.get("skipped", 0))
        if batch["audio"].numel() == 0:
            self._ranks_agree(None, "generator loss")  # the other ranks skip this update with this one
            return None
        target, inputs, mask = batch["audio"], batch["degraded"], batch["mask"]
        self._check_batch(target)
        opt_g, opt_d = self.optimizers()
        adversarial = self.global_step >= self.adversarial_start_step

        recon, kl = self._reconstruct(inputs)
        recon, target = recon * mask, target * mask
        terms = dict(self.spectral_loss(recon, target))
        terms["kl"] = kl
        if self.mel_loss is not None:
            terms.update(self.mel_loss(recon, target))
        if adversarial:
            real_logits, real_features = self.discriminator(target)
            self.discriminator.requires_grad_(False)
            fake_logits, fake_features = self.discriminator(recon)
            self.discriminator.requires_grad_(True)
            terms.update(generator_hinge_loss(fake_logits))
            terms.update(feature_matching_loss(real_features, fake_features))
        total = sum(self.weights[name] * terms[name] for name in self.weights if name in terms)
        terms["loss"] = total

        if self._update(opt_g, total, list(self.model.parameters()), "generator loss"):
            self.ema.update(self.model.autoencoder)
            if self._sched_g is not None:
                self._sched_g.step()
        else:
            return None
        if adversarial:
            disc_terms = discriminator_hinge_loss(real_logits, self.discriminator(recon.detach())[0])
            d_params = list(self.discriminator.parameters())
            stepped = self._update(opt_d, disc_terms["disc"], d_params, "discriminator loss", count=False)
            if stepped and self._sched_d is not None:
                self._sched_d.step()
            terms.update(disc_terms)
        self._log_terms(terms, batch_size=target.shape[0])
        step = self.global_step
        if self.plotter is not None and self.plotter.due(step) and self.trainer.is_global_zero:
            self.plot(step, *self.listening(target[0], inputs[0] * mask[0], recon[0], batch["setting"][0]))
        return None

    def _update(
        self,
        optimizer: Any,
        loss: torch.Tensor,
        parameters: list[nn.Parameter],
        what: str,
        count: bool = True,
    ) -> bool:
        """Backward, clip, step; skip (and count) the update when the loss or the gradient is not finite.

        Under DDP the decision is taken by all ranks together (a rank that skipped alone would leave the
        others waiting in the gradient all-reduce), and the parameters this update does not train take
        part with weight zero: each backward then reduces every parameter, as DDP without
        ``find_unused_parameters`` requires. Gradients are identical on every rank after the all-reduce,
        so the gradient check below agrees without another collective.
        """
        if not self._ranks_agree(loss, what):
            return False
        optimizer.zero_grad(set_to_none=True)
        idle = self._idle_parameters(parameters)
        if idle:
            loss = loss + 0.0 * sum(p.sum() for p in idle)
        self.manual_backward(loss)
        for p in idle:
            p.grad = None
        norm = self._clip([p for p in parameters if p.grad is not None])
        if not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)
            self._skip(f"{what} gradient")
            return False
        if count:
            optimizer.step()
        else:
            _step_uncounted(optimizer)
        optimizer.zero_grad(set_to_none=True)
        return True

    def _multi_process(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _ranks_agree(self, loss: torch.Tensor | None, what: str) -> bool:
        """True when every rank has a finite loss (``None``: an empty batch); else all skip and count alike."""
        flags = torch.tensor(
            [loss is None, loss is not None and not bool(torch.isfinite(loss))],
            dtype=torch.float32,
            device=self.device,
        )
        if self._multi_process():
            flags = self.trainer.strategy.reduce(flags, reduce_op="sum")
        empty, bad = bool(flags[0] > 0), bool(flags[1] > 0)
        if bad:
            self._skip(what)
        return not (empty or bad)

    def _idle_parameters(self, trained: list[nn.Parameter]) -> list[nn.Parameter]:
        """Trainable parameters outside ``trained`` (the other optimizer's), under DDP only."""
        if not self._multi_process():
            return []
        own = {id(p) for p in trained}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in own]

    def _log_terms(self, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        named = {}
        for name, value in terms.items():
            if name != "loss":
                key = f"train/{name}" if name.startswith("stft_") else f"train/loss_{name}"
                named[key] = value.detach()
        named["train/nonfinite_skips"] = float(self.nonfinite_skips)
        self.log_dict(named, prog_bar=False, batch_size=batch_size)
        self.log("train/loss", terms["loss"].detach(), prog_bar=True, batch_size=batch_size)

    def on_train_epoch_start(self) -> None:
        self.skipped_items_epoch = 0

    def on_train_epoch_end(self) -> None:
        """Under DDP each rank loads its own items: the epoch's count (logged and said) is every rank's sum."""
        count = self.skipped_items_epoch
        if self._multi_process():
            local = torch.tensor(float(count), device=self.device)
            count = int(self.trainer.strategy.reduce(local, reduce_op="sum").item())
        self.skipped_items_total += count
        # the sum is equal on every rank: "max" keeps it, and sync_dist says so to Lightning
        self.log("data/skipped_items_epoch", float(count), sync_dist=True, reduce_fx="max")
        if count:
            rank_zero_warn(
                f"epoch {self.current_epoch}: {count} audio items failed to load and were skipped "
                f"({self.skipped_items_total} in total); see the warnings above for the files"
            )

    # ----- validation -----
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["audio"].numel() == 0:
            return
        target, mask = batch["audio"] * batch["mask"], batch["mask"]
        self._check_batch(target)
        vae = self.ema_vae() if self.validate_with_ema else self.model
        for name, source in (("clean", batch["audio"]), ("mp3", batch["degraded"])):
            recon = vae(source, sample_posterior=False).reconstruction * mask
            values = self.metrics(recon, target)
            self.log_dict(
                {f"val/{name}/{k}": v for k, v in values.items()}, batch_size=target.shape[0], sync_dist=True
            )

    # ----- plots -----
    def listening(
        self, clean: torch.Tensor, degraded: torch.Tensor, recon: torch.Tensor, setting: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
        """Seconds of the first validation song (refrain.training.vae_listening), reconstructed by the EMA
        weights from its MP3; the training crop when there is no validation song."""
        from refrain.training.vae_listening import listening_clip, reconstruct

        m = self.model
        clip = listening_clip(self.trainer.datamodule, m.sample_rate, m.audio_channels, m.hop_length)
        if clip is None:
            return clean, degraded, recon.detach(), setting
        clean, degraded, setting = clip
        vae = self.ema_vae() if self.validate_with_ema else self.model
        return clean, degraded, reconstruct(vae, degraded, self.device), setting

    def plot(
        self, step: int, clean: torch.Tensor, degraded: torch.Tensor, recon: torch.Tensor, setting: str
    ) -> Path | None:
        """Write and log the listening triple through the plotter (``run_dir/plots/step_<6-digit step>``)."""
        if self.plotter is None:
            return None
        return self.plotter(
            step,
            {"input": clean, "degraded": degraded, "reconstruction": recon},
            setting,
            self.model.sample_rate,
            self.loggers,
        )

    # ----- checkpoints -----
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["refrain_vae"] = {
            "autoencoder_config": json.loads(json.dumps(dict(self.model.autoencoder.config), default=_plain)),
            "nonfinite_skips": self.nonfinite_skips,
            "skipped_items_total": self.skipped_items_total,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("refrain_vae", {})
        self.nonfinite_skips = int(state.get("nonfinite_skips", 0))
        self.skipped_items_total = int(state.get("skipped_items_total", 0))

    def on_fit_end(self) -> None:
        if self.nonfinite_skips:
            rank_zero_info(f"VAE training skipped {self.nonfinite_skips} non-finite updates in total")


def _plain(value: Any) -> Any:
    """JSON fallback for config values (tuples, numpy scalars) so the checkpoint loads with weights_only."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)


def _step_uncounted(optimizer: Any) -> None:
    """Step a LightningOptimizer without advancing ``global_step`` (the discriminator's update).

    Lightning counts every manual ``optimizer.step()`` through the LightningOptimizer's before/after
    hooks; silencing them for this call keeps one global step per generator update.
    """
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = _nothing
    try:
        optimizer.step()
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


def _nothing() -> None:
    return None
