"""In-training evaluation: the paper metrics of ``refrain-eval`` on a fixed held-out set every N steps.

``VAEEvaluation`` reconstructs the same held-out windows (lossless and MP3-degraded) with the model the
task validates with (the EMA weights by default) and logs STOI, PESQ, MCD ... as ``eval/<condition>/<metric>``
to every logger, and draws their curves over steps in ``plots/eval_vae.png``. It runs on rank 0 only; its
cost is measured the first time and printed once, so a user knows what the setting costs. Off in the tiny
demo recipes, on in the full VAE recipe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from refrain.eval.signal_metrics import ReconstructionScorer


class VAEEvaluation(Callback):
    """Every ``every_n_steps``: reconstruction metrics of ``num_clips`` fixed held-out windows."""

    def __init__(
        self,
        dataset_path: str | Path,
        every_n_steps: int = 2000,
        num_clips: int = 4,
        seconds: float = 5.0,
        conditions: Sequence[str] = ("clean", "cbr128"),
        metrics: Sequence[str] = ("stoi", "pesq", "mcd", "si_sdr"),
        plot_path: str | Path | None = None,
    ) -> None:
        self.dataset_path = str(dataset_path)
        self.every_n_steps = max(1, int(every_n_steps))
        self.num_clips, self.seconds = int(num_clips), float(seconds)
        self.conditions, self.metrics = list(conditions), list(metrics)
        self.plot_path = Path(plot_path) if plot_path else None
        self.history: list[dict[str, Any]] = []
        self._inputs: list[tuple[Any, dict[str, Any]]] | None = None
        self._said_cost = False

    def _prepare(self, sample_rate: int) -> list[tuple[Any, dict[str, Any]]]:
        """The clips and their degraded inputs, made once (MP3 encoding is not part of the measured cost)."""
        from refrain.audio.mp3 import mp3_roundtrip
        from refrain.eval.vae_eval import heldout_clips, parse_condition

        clips = heldout_clips(self.dataset_path, sample_rate, self.seconds, self.num_clips)
        inputs = []
        for clip in clips:
            degraded = {}
            for name in self.conditions:
                setting = parse_condition(name)
                degraded[name] = (
                    clip.audio if setting is None else mp3_roundtrip(clip.audio, sample_rate, setting)
                )
            inputs.append((clip, degraded))
        return inputs

    def evaluate(self, model: Any) -> dict[str, float]:
        """``eval/<condition>/<metric>`` means over the fixed clips for ``model`` (an OobleckVAE)."""
        from refrain.eval.vae_eval import reconstruct_with

        rate = int(model.sample_rate)
        if self._inputs is None:
            self._inputs = self._prepare(rate)
        scorer = ReconstructionScorer(rate)
        sums: dict[str, list[float]] = {}
        for clip, degraded in self._inputs:
            for name, audio in degraded.items():
                row = scorer.score(clip.audio, reconstruct_with(model, audio, rate))
                for metric in self.metrics:
                    sums.setdefault(f"eval/{name}/{metric}", []).append(row[metric])
        return {key: float(sum(v) / len(v)) for key, v in sums.items()}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or not trainer.is_global_zero:
            return
        use_ema = getattr(pl_module, "validate_with_ema", False) and hasattr(pl_module, "ema_vae")
        model = pl_module.ema_vae() if use_ema else pl_module.model
        started = time.perf_counter()
        figures = self.evaluate(model)
        if not self._said_cost:
            rank_zero_info(
                f"evaluation: {len(figures)} figures on {self.num_clips} x {self.seconds:g} s clips took "
                f"{time.perf_counter() - started:.1f} s, every {self.every_n_steps} steps"
            )
            self._said_cost = True
        for logger in trainer.loggers:
            logger.log_metrics(figures, step=step)
        self.history.append({"step": step, **figures})
        if self.plot_path is not None:
            self.plot()

    def plot(self) -> Path | None:
        """Each figure's curve over training steps, one panel per metric, one line per condition."""
        from refrain.eval.report import plot_metric_curves

        if not self.history or self.plot_path is None:
            return None
        rows = [
            {"system": condition, "step": str(entry["step"]), **{m: entry.get(f"eval/{condition}/{m}") for m in self.metrics}}
            for entry in self.history
            for condition in self.conditions
        ]  # fmt: skip
        return plot_metric_curves(rows, self.metrics, "step", self.plot_path, "VAE evaluation over training")

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
