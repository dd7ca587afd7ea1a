"""The training function: compose-time config in, a fitted Lightning run out. Tests call it directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from refrain.allocator import keep_freed_memory
from refrain.config import register_resolvers, resolve_checked
from refrain.errors import RefrainInputError
from refrain.training import run_folder
from refrain.training.callbacks import CheckpointMetadata, ParameterSummary
from refrain.training.checkpoint_io import (
    AtomicCheckpointIO,
    check_safe_loading,
    remove_stale_partial_checkpoints,
)
from refrain.training.clipping import check_fused_clipping
from refrain.training.cluster import release_process_group
from refrain.training.console import quiet_console


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
    if (cfg.get("trainer") or {}).get("enable_model_summary", True):
        callbacks.append(ParameterSummary())  # Lightning's own prints a column of zero FLOPs
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
    if cfg.get("validate_only") and not (cfg.get("ckpt_path") or cfg.get("checkpoint_dir")):
        raise RefrainInputError(
            "--validate_only",
            "needs weights to validate",
            "pass --ckpt_path CHECKPOINT (a training checkpoint) or --checkpoint_dir BUNDLE",
        )


def check_trainer_fits_task(trainer: pl.Trainer, task: pl.LightningModule) -> None:
    """Settings Lightning would refuse later with its own exception, refused now in one line."""
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    if accumulate > 1 and not task.automatic_optimization:
        raise RefrainInputError(
            "--accumulate_grad_batches / trainer.accumulate_grad_batches",
            f"{type(task).__name__} steps its optimisers by hand (generator and discriminator), so Lightning "
            f"cannot accumulate {accumulate} batches",
            "drop it (keep 1) and raise data.batch_size (--batch_size) or add devices for a larger batch",
        )
    if task.automatic_optimization:  # the Trainer clips; a manual task (the VAE's) clips on its own
        check_fused_clipping(
            trainer.precision_plugin, trainer.gradient_clip_val, getattr(task, "optimizer_factory", None)
        )


def checkpoint_summary(path: str | Path) -> dict[str, Any]:
    """The task, recipe and step a checkpoint records (memory-mapped: the tensors are not read)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a foreign file: nothing to report beyond the mismatch itself
        return {}
    config = ((checkpoint.get("refrain") or {}).get("config") or {}) if isinstance(checkpoint, dict) else {}
    return {
        "task": str((config.get("task") or {}).get("_target_", "?")).rsplit(".", 1)[-1],
        "exp_name": config.get("exp_name"),
        "global_step": int(checkpoint.get("global_step", 0)) if isinstance(checkpoint, dict) else 0,
    }


@contextmanager
def explained_checkpoint_mismatch(ckpt_path: str | None, task: pl.LightningModule) -> Iterator[None]:
    """A checkpoint of another model (a VAE checkpoint resumed into a DiT run) as one line, not Lightning's
    traceback with a dump of every state-dict key."""
    try:
        yield
    except RuntimeError as error:
        if not ckpt_path or "Error(s) in loading state_dict" not in str(error):
            raise
        facts = checkpoint_summary(ckpt_path)
        what = f"a {facts['task']} checkpoint (run {facts['exp_name']!r})" if facts else "a checkpoint"
        raise RefrainInputError(
            f"--ckpt_path {ckpt_path}",
            f"is {what} whose weights do not fit this run's {type(task).__name__}",
            "resume with a checkpoint of the same recipe and model size; to start from exported weights "
            "use --checkpoint_dir BUNDLE",
        ) from None


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
    if cfg.get("lora_config_path"):  # the lora group composed the run; check its inputs in one line
        from refrain.lora.recipe import check_lora_run

        check_lora_run(cfg)
    full_fine_tune = bool(cfg.get("checkpoint_dir")) and not cfg.get("lora_config_path")
    if full_fine_tune:
        from refrain.training import warm_start

        cfg = cfg.copy()
        warm_start.prepare_config(cfg)  # e.g. a DiT bundle's VAE, before anything reads vae_bundle
    check_selected(cfg)
    resolve_checked(cfg)  # a resolver's bad input (a missing bundle) as one line, before anything is built
    quiet_console()
    datamodule = instantiate(cfg.data)
    task = warm_start.task_from_bundle(cfg) if full_fine_tune else instantiate(cfg.task)
    if cfg.get("torch_compile"):  # --torch_compile: the backbone's blocks, in place (names unchanged)
        from refrain.models.compile import compile_blocks

        note = compile_blocks(task.model)
        if note:
            print(f"note: {note}")
    run_folder.continue_logger_versions(cfg)
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **{"enable_model_summary": False, **trainer_kwargs},  # ParameterSummary (a callback) prints it
    )
    check_trainer_fits_task(trainer, task)
    check_safe_loading(trainer.strategy)  # every resume reads through weights_only (FSDP included)
    return Run(cfg, datamodule, task, trainer, callbacks)


def _runs_on_cpu(cfg: DictConfig) -> bool:
    """The model steps on the CPU: accelerator "cpu", or "auto" without a GPU."""
    import torch

    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def train(cfg: DictConfig, **trainer_kwargs: Any) -> TrainResult:
    """Build data, task, loggers, callbacks and a Lightning Trainer from ``cfg`` and fit (or only validate)."""
    if cfg.get("validate_only"):
        from refrain.training.validate import validate

        return validate(cfg, **trainer_kwargs)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if _runs_on_cpu(cfg):
        keep_freed_memory()  # steps re-fault their freed activations otherwise (refrain.allocator)
    run_dir = run_folder.claim_run_dir(cfg)  # before anything is built or written there
    run = build_run(cfg, **trainer_kwargs)
    remove_stale_partial_checkpoints(run.callbacks)  # .tmp files of a save killed in an earlier start
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(run.cfg, resolve=True))
    with explained_checkpoint_mismatch(run.cfg.ckpt_path, run.task):
        run.trainer.fit(run.task, datamodule=run.datamodule, ckpt_path=run.cfg.ckpt_path)
    release_process_group()  # DDP: a clean exit code after a finished run

    last = next((cb.last_model_path for cb in run.callbacks if isinstance(cb, ModelCheckpoint)), None)
    metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items() if v.numel() == 1}
    return TrainResult(run_dir, Path(last) if last else None, metrics, run.trainer, run.task)
