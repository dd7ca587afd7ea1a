"""Run folders: a second run never lands beside another run's checkpoints; resumes and requeues continue."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from refrain.errors import RefrainInputError
from refrain.training.run_folder import claim_run_dir, continue_logger_versions, sweep_job_dir


def config(run_dir: Path, ckpt_path: str | None = None):
    return OmegaConf.create(
        {
            "run_dir": str(run_dir),
            "ckpt_path": ckpt_path,
            "logger": {
                "tensorboard": {
                    "_target_": "lightning.pytorch.loggers.TensorBoardLogger",
                    "save_dir": str(run_dir / "logs"),
                    "name": "tensorboard",
                }
            },
        }
    )


@pytest.fixture
def used(tmp_path: Path) -> Path:
    run = tmp_path / "exps" / "demo"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run / "logs" / "tensorboard" / "version_0").mkdir(parents=True)
    (run / "logs" / "tensorboard" / "version_3").mkdir(parents=True)
    return run


def test_a_fresh_run_in_a_used_folder_is_refused(used: Path, tmp_path: Path) -> None:
    with pytest.raises(RefrainInputError, match="already holds a run") as info:
        claim_run_dir(config(used))
    assert f"--ckpt_path {used / 'checkpoints' / 'last.ckpt'}" in str(info.value)
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"x")
    with pytest.raises(RefrainInputError, match="starts from another run"):
        claim_run_dir(config(used, str(other)))
    assert claim_run_dir(config(tmp_path / "exps" / "new")).is_dir()


def test_a_resume_continues_its_tensorboard_version(used: Path) -> None:
    cfg = config(used, str(used / "checkpoints" / "last.ckpt"))
    assert claim_run_dir(cfg) == used
    continue_logger_versions(cfg)
    assert cfg.logger.tensorboard.version == 3


def test_a_requeued_slurm_job_continues_without_ckpt_path(used: Path, monkeypatch) -> None:
    (used / "hpc_ckpt_1.ckpt").write_bytes(b"x")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(RefrainInputError):
        claim_run_dir(config(used))
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert claim_run_dir(config(used)) == used


def test_sweep_jobs_get_their_own_folders(tmp_path: Path) -> None:
    cfg = config(tmp_path / "sweep")
    sweep_job_dir(cfg, 3)
    assert cfg.run_dir == str(tmp_path / "sweep" / "job3")
