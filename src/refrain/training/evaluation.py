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
            {
                "system": condition,
                "step": str(entry["step"]),
                **{m: entry.get(f"eval/{condition}/{m}") for m in self.metrics},
            }
            for entry in self.history
            for condition in self.conditions
        ]
        return plot_metric_curves(rows, self.metrics, "step", self.plot_path, "VAE evaluation over training")

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


class SampleEvaluation:
    """FAD and CLAP score of the DiT's listening samples, computed where they are made (the plotter).

    The samples are the first K validation prompts sampled from fixed noise, so the figures compare
    across steps. FAD compares the K generated crops with the songs' own audio of the same crops, per
    configured embedding model (an ssl folder such as MERT, and/or CLAP); the CLAP score is the cosine of
    each sample with its prompt. K must be at least 2 for FAD (``task.plotter.num_samples``).
    """

    def __init__(
        self,
        mert: str | None = None,
        mert_layer: int = -1,
        mert_sample_rate: int = 24000,
        clap: str | None = None,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ) -> None:
        self.folders = {"mert": mert, "clap": clap}
        self.trust_remote_code = trust_remote_code
        self.mert_layer, self.mert_sample_rate, self.device = mert_layer, mert_sample_rate, device
        self._embedders: list[Any] | None = None
        self._said_cost = False

    def embedders(self) -> list[Any]:
        """The configured models, loaded on first use (a missing folder is a one-line error then)."""
        if self._embedders is None:
            from refrain.eval.embedders import EmbedderSpec, build_embedder

            specs = []
            if self.folders["mert"]:
                specs.append(
                    EmbedderSpec(
                        "mert",
                        "ssl",
                        self.folders["mert"],
                        self.mert_layer,
                        self.mert_sample_rate,
                        normalize=True,
                        trust_remote_code=self.trust_remote_code,
                    )
                )
            if self.folders["clap"]:
                specs.append(EmbedderSpec("clap", "clap", self.folders["clap"]))
            self._embedders = [build_embedder(spec, self.device) for spec in specs]
        return self._embedders

    def __call__(self, samples: Sequence[Any], sample_rate: int) -> dict[str, float]:
        """``eval/fad_<model>`` and ``eval/clap`` for decoded samples (PlotSample-like objects)."""
        import numpy as np

        from refrain.audio.resample import resample
        from refrain.eval.frechet import GaussianStats, frechet_distance

        started = time.perf_counter()
        generated = [s.audio for s in samples if s.audio is not None]
        originals = [s.original_audio for s in samples if s.original_audio is not None]
        figures: dict[str, float] = {}

        def mono(items: list[Any], rate: int) -> np.ndarray:
            waves = [
                resample(np.asarray(a, dtype=np.float32).mean(axis=0, keepdims=True), sample_rate, rate)[0]
                for a in items
            ]
            length = min(w.shape[-1] for w in waves)
            return np.stack([w[:length] for w in waves])

        for embedder in self.embedders():
            gen = embedder.embed_audio(mono(generated, embedder.sample_rate)) if len(generated) >= 2 else None
            ref = embedder.embed_audio(mono(originals, embedder.sample_rate)) if len(originals) >= 2 else None
            if gen is not None and ref is not None:
                figures[f"eval/fad_{embedder.name}"] = frechet_distance(
                    GaussianStats.of(gen), GaussianStats.of(ref)
                )
            if embedder.name == "clap" and generated:
                audio = (
                    gen if gen is not None else embedder.embed_audio(mono(generated, embedder.sample_rate))
                )
                text = embedder.embed_text([str(s.prompt) for s in samples if s.audio is not None])
                figures["eval/clap"] = float((audio * text).sum(axis=1).mean())
        if not self._said_cost:
            rank_zero_info(
                f"evaluation of {len(generated)} samples took {time.perf_counter() - started:.1f} s"
            )
            self._said_cost = True
        return figures
