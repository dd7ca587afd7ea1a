"""Flow-matching DiT training with REPA, EMA and listening plots, as a LightningModule.

Automatic optimisation: the Trainer owns backward, ``accumulate_grad_batches`` and gradient clipping
(``gradient_clip_val`` in conf/train.yaml). The task adds what Lightning does not: a fresh posterior
sample of the cached latent every step (x0 = mean + std * eps), REPA on the backbone's hidden state,
an EMA of the DiT updated after every real optimiser step, a skip (counted and logged) of any step whose
loss or gradient is not finite, validation flow loss in fixed-noise sigma bins, and periodic samples
from the EMA weights decoded with the VAE bundle.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from refrain.errors import RefrainInputError
from refrain.losses.flow_matching import FlowMatchingLoss, binned_flow_loss
from refrain.losses.repa import REPALoss
from refrain.models.backbone import backbone_of, check_loss, spec_of
from refrain.models.dit.conditioning import DiTConditioning
from refrain.models.dit.lyrics import LyricEmbedder
from refrain.text.vocab import VOCAB_FILE
from refrain.training.clipping import clip_unscaled_gradients
from refrain.training.dit_plotting import SamplePlotter
from refrain.training.ema import EMA
from refrain.training.faults import gradients_finite
from refrain.training.lr_schedule import WarmupDecay

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
REPAFactory = Callable[[int], REPALoss]  # hidden size -> projectors (conf: repa.loss, _partial_)
EMAFactory = Callable[[nn.Module, nn.Module], EMA]  # (model, twin) -> EMA (conf: task.ema, _partial_)


def lyric_capacity(model: nn.Module) -> int | None:
    """Size of the backbone's phoneme embedding table (None for a backbone without one)."""
    sizes = [m.vocab_size for m in model.modules() if isinstance(m, LyricEmbedder)]
    return min(sizes) if sizes else None


def check_phoneme_vocab(model: nn.Module, dataset_path: str | Path | None) -> None:
    """One-line error when the dataset's phoneme vocabulary outgrew the model's embedding table."""
    capacity = lyric_capacity(model)
    vocab_file = Path(dataset_path) / VOCAB_FILE if dataset_path else None
    if capacity is None or vocab_file is None or not vocab_file.is_file():
        return
    from refrain.text.vocab import PhonemeVocab

    size = len(PhonemeVocab.load(vocab_file))
    if size > capacity:
        raise RefrainInputError(
            vocab_file,
            f"{size} phonemes but model.dit.config.lyric_vocab_size is {capacity}",
            f"set model.dit.config.lyric_vocab_size={size} or more (leave headroom: the vocabulary only grows)",
        )


def batch_conditioning(batch: Mapping[str, Any]) -> DiTConditioning:
    """The DiTConditioning of a DiT batch (see the batch contract in refrain.data.dit_dataset)."""
    return DiTConditioning(
        style=batch["style"],
        style_mask=batch["style_mask"].bool(),
        lyrics=batch["lyrics"].long(),
        speaker=batch.get("speaker"),
        frame_mask=batch["frame_mask"].bool(),
        all_frames_valid=batch.get("all_frames_valid"),
        host_dropped_style=batch.get("style_absent"),
    )


def _default_optimizer(params: Iterable[Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-4)


@dataclass(frozen=True)
class FlowValidation:
    """Validation flow loss in ``bins`` equal sigma bins with noise fixed by ``seed``; ``use_ema`` = the EMA's."""

    bins: int = 5
    seed: int = 1234
    use_ema: bool = True


class DiTTask(pl.LightningModule):
    """Trains any ``VelocityModel`` (default: ``DiffusionTransformer``) on cached DiT batches."""

    def __init__(
        self,
        model: nn.Module,
        loss: FlowMatchingLoss | None = None,
        optimizer: OptimizerFactory | None = None,
        lr_schedule: WarmupDecay | None = None,
        repa: REPAFactory | None = None,
        ema: EMAFactory | None = None,
        plotter: SamplePlotter | None = None,
        every_plot_step: int | None = None,
        validation: FlowValidation | None = None,
        vae_bundle: str | Path | None = None,
        dataset_path: str | Path | None = None,
        activation_offload: bool = False,
    ) -> None:
        """``repa``/``ema`` are built here from their configured factories because both need the model:
        ``repa(hidden_size)`` (None, no teachers or weight 0 = no REPA), ``ema(model, copy)`` (None = none)."""
        super().__init__()
        self.model = model
        self.activation_offload = activation_offload
        self.loss_fn = loss or FlowMatchingLoss()
        self.optimizer_factory = optimizer or _default_optimizer
        self.lr_schedule = lr_schedule
        check_loss(model, self.loss_fn)  # a CFG drop or context the backbone lacks: one line, now
        self.repa: REPALoss | None = repa(int(spec_of(model).hidden_size)) if repa is not None else None
        if self.repa is not None and not (self.repa.weights and self.repa.weight > 0):
            self.repa = None
        self.ema = ema(model, copy.deepcopy(model)) if ema is not None else None
        self.validation = validation or FlowValidation()
        self.every_plot_step = int(every_plot_step or 0)
        self.plotter = plotter
        self.vae_bundle = str(vae_bundle) if vae_bundle else None
        self.dataset_path = dataset_path
        self.nonfinite_skips = 0
        self._skip_pending = False
        self._step_skipped = False
        self._last_plot_step = -1
        self._plot_batch: dict[str, Any] | None = None

    # ----- set-up -----
    def setup(self, stage: str) -> None:
        check_phoneme_vocab(self.model, self.dataset_path)
        if self.vae_bundle:
            from refrain.bundles.vae import read_manifest

            channels = int(read_manifest(self.vae_bundle)["latent_channels"])
            if channels != self.model.latent_channels:
                raise RefrainInputError(
                    "model.dit.config.latent_channels",
                    f"{self.model.latent_channels} but the VAE bundle {self.vae_bundle} has {channels}",
                    f"set model.dit.config.latent_channels={channels}",
                )

    def configure_optimizers(self) -> Any:
        """AdamW (from config) with weight decay on matrices only; warm-up + decay per optimiser step."""
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in trainable if p.ndim >= 2 and "null_" not in n]
        no_decay = [p for n, p in trainable if not (p.ndim >= 2 and "null_" not in n)]
        groups = [  # named: LearningRateMonitor logs lr/decayed and lr/not_decayed, not lr/pg1, lr/pg2
            {"params": decay, "name": "decayed"},
            {"params": no_decay, "weight_decay": 0.0, "name": "not_decayed"},
        ]
        optimizer = self.optimizer_factory([g for g in groups if g["params"]])
        if self.lr_schedule is None:
            return optimizer
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else None
        scheduler = self.lr_schedule.build(optimizer, int(total) if total and total != float("inf") else None)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }

    def sampling_model(self) -> nn.Module:
        """The weights to sample, validate and export with: the EMA when kept, else the live model."""
        return self.ema.shadow if self.ema is not None else self.model

    # ----- training -----
    def conditioning(self, batch: Mapping[str, Any]) -> Any:
        """The backbone's own conditioning of a batch (refrain.models.backbone contract)."""
        return backbone_of(self.model).conditioning_from_batch(batch)

    def compute_loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Named terms (``flow``, ``repa/<teacher>``, ``repa``) and their weighted sum ``loss``."""
        mean, std = batch["latent_mean"], batch["latent_std"]
        x0 = mean + std * torch.randn_like(mean)
        features = batch.get("teacher_features") or {}
        use_repa = self.repa is not None and bool(features)
        out = self.loss_fn(self.model, x0, self.conditioning(batch), return_hidden=use_repa)
        terms = dict(out.terms)
        total = out.loss
        if self.repa is not None:
            if use_repa:
                repa_terms = self.repa(out.hidden, out.cond.frame_mask, features, batch.get("teacher_masks"))
                terms.update(repa_terms)
                total = total + self.repa.weight * repa_terms["repa"]
            # Projectors of teachers absent from this batch get an exact zero, so DDP sees every parameter used.
            idle = [
                p
                for name, proj in self.repa.projectors.items()
                if name not in features
                for p in proj.parameters()
            ]
            if idle:
                total = total + 0.0 * sum(p.sum() for p in idle)
        terms["loss"] = total
        return terms

    def _saved_activations(self) -> contextlib.AbstractContextManager[None]:
        """With ``activation_offload``, PyTorch keeps the tensors saved for backward in host memory.

        It trades PCIe traffic for GPU memory (``torch.autograd.graph.save_on_cpu``); combine it with the
        model's gradient checkpointing for the largest presets. On a CPU run it changes nothing.
        """
        if not self.activation_offload:
            return contextlib.nullcontext()
        return torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())

    def _multi_process(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if (
            int(batch["latent_mean"].shape[0]) == 0
        ):  # every item of the batch failed to load (counted by the data)
            if not self._multi_process():
                return None
            return 0.0 * sum(
                p.sum() for p in self.parameters() if p.requires_grad
            )  # every process must backward
        with self._saved_activations():
            terms = self.compute_loss(batch)
        total = terms["loss"]
        batch_size = int(batch["latent_mean"].shape[0])
        if not bool(torch.isfinite(total)):
            self._skip_pending = True
            bad = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            rank_zero_warn(f"non-finite DiT loss at step {self.global_step} ({bad}): the update is skipped")
            # One process may return None; with several, every process must run backward (grads are dropped later).
            return total if self._multi_process() else None
        named = {f"train/{k}": v.detach() for k, v in terms.items() if k != "loss"}
        self.log_dict(named, batch_size=batch_size)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch_size)
        return total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the whole (accumulated) update when a loss or a gradient is not finite on any process."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        local = self._skip_pending
        if not local and scaler is None:  # fp16's GradScaler handles overflowing gradients itself
            local = not gradients_finite(optimizer)
        self._skip_pending = False
        self._step_skipped = self.trainer.strategy.reduce_boolean_decision(local, all=False)
        if self._step_skipped:  # refrain.training.faults.NonFiniteGuard reads the count and stops a run
            self.nonfinite_skips += 1
            if scaler is None:
                optimizer.zero_grad(set_to_none=True)
        self.log("train/nonfinite_skips", float(self.nonfinite_skips))

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """bf16-mixed with a fused AdamW clips like fp32 (refrain.training.clipping); the rest is Lightning's."""
        plugin = self.trainer.precision_plugin
        if not clip_unscaled_gradients(plugin, optimizer, gradient_clip_val, gradient_clip_algorithm):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        self._step_skipped = False
        optimizer.step(closure=optimizer_closure)
        if self.ema is not None and not self._step_skipped:
            self.ema.update(self.model)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        if (
            self.every_plot_step
            and step
            and step % self.every_plot_step == 0
            and step != self._last_plot_step
        ):
            self.plot(step, batch)

    def on_train_end(self) -> None:
        if self.every_plot_step and self.global_step != self._last_plot_step:
            self.plot(self.global_step)
        if self.nonfinite_skips:
            rank_zero_info(f"DiT training skipped {self.nonfinite_skips} non-finite updates in total")

    # ----- validation -----
    def binned_validation(self, batch: Mapping[str, Any], batch_idx: int = 0) -> dict[str, Tensor]:
        """``flow_bin_<lo>_<hi>`` per sigma bin plus their mean ``flow``; same noise and sigmas every time."""
        x0 = batch["latent_mean"]
        generator = torch.Generator(device=x0.device)
        generator.manual_seed(self.validation.seed + 1_000_003 * self.global_rank + batch_idx)
        model = self.sampling_model() if self.validation.use_ema else self.model
        raw = binned_flow_loss(model, x0, self.conditioning(batch), self.validation.bins, generator)
        terms = {"flow_bin_" + k.removeprefix("flow_sigma_"): v for k, v in raw.items()}
        terms["flow"] = torch.stack(list(terms.values())).mean()
        return terms

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if int(batch["latent_mean"].shape[0]) == 0:
            return
        terms = self.binned_validation(batch, batch_idx)
        size = int(batch["latent_mean"].shape[0])
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=size, sync_dist=True)

    # ----- listening -----
    def _plot_source(self, fallback: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The first few validation items (kept on the CPU); the training batch when there is no validation."""
        if self._plot_batch is None and self.plotter is not None:
            batch = None
            datamodule = self.trainer.datamodule if self._trainer is not None else None
            if datamodule is not None and hasattr(datamodule, "val_dataloader"):
                try:
                    batch = next(iter(datamodule.val_dataloader()))
                except (StopIteration, RefrainInputError, TypeError, NotImplementedError):
                    batch = None
            if batch is None or int(batch["latent_mean"].shape[0]) == 0:
                batch = fallback
            if batch is None:
                return None
            n = self.plotter.num_samples
            self._plot_batch = {
                k: (v[:n].detach().cpu() if isinstance(v, Tensor) else v[:n] if isinstance(v, list) else v)
                for k, v in batch.items()
                if k not in ("teacher_features", "teacher_masks")
            }
        return self._plot_batch

    def plot(self, step: int, fallback: Mapping[str, Any] | None = None) -> Path | None:
        """Sample the validation prompts with the EMA weights, decode, write and log; returns the folder."""
        self._last_plot_step = step
        if self.plotter is None:
            return None
        attached = self._trainer is not None
        if attached and not self.trainer.is_global_zero:
            return None
        source = self._plot_source(fallback)
        if source is None:
            return None
        batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in source.items()}
        context = self.trainer.precision_plugin.forward_context() if attached else None
        loggers = self.loggers if attached else []
        return self.plotter(
            self.sampling_model(), self.conditioning(batch), batch, step, self.device, loggers, context
        )

    # ----- checkpoints -----
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["refrain_dit"] = {
            "nonfinite_skips": self.nonfinite_skips,
            "last_plot_step": self._last_plot_step,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("refrain_dit", {})
        self.nonfinite_skips = int(state.get("nonfinite_skips", 0))
        self._last_plot_step = int(state.get("last_plot_step", -1))
