"""Validation only (``trainer.py ... --validate_only``): the run's validation loop on a checkpoint's weights.

The recipe, data and task are the run's; the weights come from ``--ckpt_path`` (a training checkpoint:
DiT, VAE or LoRA) or from ``--checkpoint_dir`` (a bundle). Nothing of the run that wrote the checkpoint
is touched: no logger version, no config.yaml; the metrics are printed and written to
``<run folder>/validation/<checkpoint>.json`` (the checkpoint's run folder when it has one).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from refrain.fileio import atomic_path


def report_path(cfg: DictConfig) -> Path:
    if cfg.get("ckpt_path"):
        checkpoint = Path(cfg.ckpt_path)
        run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else Path(cfg.run_dir)
        return run_dir / "validation" / f"{checkpoint.stem}.json"
    return Path(cfg.run_dir) / "validation" / f"{Path(str(cfg.checkpoint_dir)).name}.json"


def validate(cfg: DictConfig, **trainer_kwargs: Any) -> Any:
    """Validate and return a ``TrainResult`` whose metrics are the validation metrics."""
    from refrain.training.run import (
        TrainResult,
        build_run,
        checkpoint_summary,
        explained_checkpoint_mismatch,
    )

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.logger = {}  # the checkpoint's run keeps its logs as they are
    run = build_run(cfg, **trainer_kwargs)
    with explained_checkpoint_mismatch(cfg.get("ckpt_path"), run.task), warnings.catch_warnings():
        # Lightning asks for the training run's callbacks (its checkpoint cadence); validation has none to restore.
        warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
        results = run.trainer.validate(
            run.task, datamodule=run.datamodule, ckpt_path=cfg.get("ckpt_path"), verbose=False
        )
    metrics = {k: float(v) for result in results for k, v in result.items()}
    source = str(cfg.get("ckpt_path") or cfg.checkpoint_dir)
    step = checkpoint_summary(cfg.ckpt_path).get("global_step") if cfg.get("ckpt_path") else None
    path = report_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        report = {"weights": source, "global_step": step, "metrics": metrics}
        Path(tmp).write_text(json.dumps(report, indent=2))
    width = max((len(k) for k in metrics), default=0)
    lines = [f"validation of {source}" + (f" (step {step})" if step is not None else "") + ":"]
    lines += [f"  {name:<{width}}  {value:.6g}" for name, value in sorted(metrics.items())]
    print("\n".join(lines))
    print(f"metrics written to {path}")
    return TrainResult(path.parent.parent, None, metrics, run.trainer, run.task)
