"""The training function: compose-time config in, a fitted Lightning run out. Tests call it directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from refrain.config import register_resolvers
from refrain.errors import RefrainInputError
from refrain.training.callbacks import CheckpointMetadata
from refrain.training.checkpoint_io import AtomicCheckpointIO
from refrain.training.cluster import release_process_group


@dataclass
class TrainResult:
    """What a finished run leaves behind, for the CLI's summary and for tests."""

    run_dir: Path
    last_checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    trainer: pl.Trainer | None = None
    task: pl.LightningModule | None = None


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate every logger selected in the logger group (a dict of named logger configs)."""
    loggers = cfg.get("logger") or {}
    return [instantiate(spec) for spec in loggers.values() if spec is not None]


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[Callback]:
    """Instantiate the named callbacks; null entries are dropped, LR monitoring only when something logs."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks: list[Callback] = [CheckpointMetadata(resolved)]
    for spec in (cfg.get("callbacks") or {}).values():
        if spec is None:
            continue
        callback = instantiate(spec)
        if isinstance(callback, LearningRateMonitor) and not has_logger:
            continue
        callbacks.append(callback)
    return callbacks


def check_selected(cfg: DictConfig) -> None:
    """Fail early, in one line, when the config cannot train anything."""
    if cfg.get("task") is None or cfg.get("data") is None:
        raise RefrainInputError(
            "config",
            "no task/data selected",
            "pick a recipe, e.g. `python trainer.py experiment=vae_mp3 --dataset_path PATH`",
        )
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise RefrainInputError(
            cfg.ckpt_path, "checkpoint to resume from does not exist", "pass an existing .ckpt file"
        )


@dataclass
class Run:
    """Everything ``train`` fits, built but not started (tests instantiate recipes through this)."""

    cfg: DictConfig
    datamodule: pl.LightningDataModule
    task: pl.LightningModule
    trainer: pl.Trainer
    callbacks: list[Callback]


def build_run(cfg: DictConfig, **trainer_kwargs: Any) -> Run:
    """Resolve LoRA routing, check the selection, and instantiate data, task, loggers, callbacks, trainer."""
    register_resolvers()
    if cfg.get("lora_config_path"):  # LoRA task/data over the base bundle (refrain.lora.recipe)
        from refrain.lora.recipe import lora_run_config

        cfg = lora_run_config(cfg)
    check_selected(cfg)
    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.task)
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **trainer_kwargs,
    )
    return Run(cfg, datamodule, task, trainer, callbacks)


def train(cfg: DictConfig, **trainer_kwargs: Any) -> TrainResult:
    """Build data, task, loggers, callbacks and a Lightning Trainer from ``cfg`` and fit."""
    pl.seed_everything(cfg.seed, workers=True)
    run = build_run(cfg, **trainer_kwargs)
    run_dir = Path(run.cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(run.cfg, resolve=True))
    run.trainer.fit(run.task, datamodule=run.datamodule, ckpt_path=run.cfg.ckpt_path)
    release_process_group()  # DDP: a clean exit code after a finished run

    last = next((cb.last_model_path for cb in run.callbacks if isinstance(cb, ModelCheckpoint)), None)
    metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items() if v.numel() == 1}
    return TrainResult(run_dir, Path(last) if last else None, metrics, run.trainer, run.task)
