"""One folder per run: a new run never lands beside another run's checkpoints; a resume continues its own.

``exp_name`` names the folder (``exps/<exp_name>``). Re-running a name whose folder already holds
checkpoints is refused with the two ways forward (resume it, or pick a fresh name); a ``-m`` sweep gives
each job its own ``job<N>`` folder, so two jobs never share ``last.ckpt`` or ``config.yaml``. A SLURM job
that Lightning requeued (same command, its ``hpc_ckpt`` in the folder) continues its own run. A resume
(``ckpt_path`` inside the run folder) keeps writing into the same logger version, so TensorBoard shows
one continuous run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import DictConfig, open_dict

from refrain.errors import RefrainInputError

_VERSION = re.compile(r"^version_(\d+)$")


def checkpoints_in(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("*.ckpt"))


def is_inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def resumes_own_run(cfg: DictConfig) -> bool:
    """True when ``ckpt_path`` is a checkpoint of the run folder this config writes to."""
    return bool(cfg.get("ckpt_path")) and is_inside(cfg.ckpt_path, Path(cfg.run_dir))


def requeued_slurm_run(run_dir: Path) -> bool:
    """A SLURM job requeued by Lightning's SIGUSR1 handler: it reruns the same command without --ckpt_path
    and Lightning resumes it from the ``hpc_ckpt_<n>.ckpt`` it saved in the run folder."""
    return bool(os.environ.get("SLURM_JOB_ID")) and any(run_dir.glob("hpc_ckpt_*.ckpt"))


def claim_run_dir(cfg: DictConfig) -> Path:
    """The run folder, after checking that this run may write there (one-line error otherwise)."""
    run_dir = Path(cfg.run_dir)
    existing = checkpoints_in(run_dir)
    if existing and not resumes_own_run(cfg) and not requeued_slurm_run(run_dir):
        last = run_dir / "checkpoints" / "last.ckpt"
        resume_from = last if last.is_file() else existing[-1]
        started = f"--ckpt_path {cfg.ckpt_path} starts from another run, but " if cfg.get("ckpt_path") else ""
        raise RefrainInputError(
            run_dir,
            f"{started}this folder already holds a run ({plural(len(existing), 'checkpoint')})",
            f"resume it with --ckpt_path {resume_from}, or start a new run with a fresh --exp_name (or run_dir=...)",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def sweep_job_dir(cfg: DictConfig, job_num: int) -> None:
    """Give job ``job_num`` of a ``-m`` sweep its own folder under the shared run folder."""
    with open_dict(cfg):
        cfg.run_dir = str(Path(str(cfg.run_dir)) / f"job{job_num}")


def latest_version(folder: Path) -> int | None:
    """The highest ``version_N`` a logger wrote under ``folder`` (None when there is none)."""
    numbers = [int(m[1]) for p in folder.glob("version_*") if (m := _VERSION.match(p.name)) and p.is_dir()]
    return max(numbers) if numbers else None


def continue_logger_versions(cfg: DictConfig) -> None:
    """On a resume of this folder's run, point TensorBoard at the version it was writing (a new version
    would split one run into two curves). CSV keeps a new version: Lightning's CSV writer deletes an
    existing metrics file it reopens."""
    if not resumes_own_run(cfg):
        return
    for spec in (cfg.get("logger") or {}).values():
        if spec is None or not str(spec.get("_target_", "")).endswith("TensorBoardLogger"):
            continue
        if spec.get("version") is None:
            version = latest_version(Path(str(spec.save_dir)) / str(spec.get("name", "lightning_logs")))
            if version is not None:
                with open_dict(spec):
                    spec.version = version


def plural(count: int, noun: str) -> str:
    """``1 checkpoint``, ``2 checkpoints``: the refusal counts what it found."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
