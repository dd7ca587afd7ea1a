"""Issue 10: every strategy's resume reads through weights_only, and a killed save's partial file goes.

Lightning refuses FSDP on a CPU-only machine, so the FSDP load path is exercised by calling the
strategy's ``load_checkpoint`` directly, on the real (tiny) DiT task, with full and sharded checkpoints
in Lightning's own layouts, genuine and crafted. A marker file stands in for the code a crafted pickle
runs: Lightning's plain FSDP loader creates it, ``SafeFSDPStrategy`` never does.
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed.checkpoint as dcp
from helpers.bundles import TINY_DIT
from helpers.untrusted import CodeOnLoad
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.strategies import fsdp as fsdp_module
from torch.distributed.checkpoint.api import CheckpointException

from refrain.bundles.dit import build_from_spec
from refrain.config import compose_config
from refrain.errors import RefrainInputError
from refrain.tasks.dit_task import DiTTask
from refrain.training.checkpoint_io import (
    AtomicCheckpointIO,
    SafeFSDPStrategy,
    check_safe_loading,
    remove_stale_partial_checkpoints,
)


def dit_task(seed: int) -> DiTTask:
    torch.manual_seed(seed)
    task = DiTTask(build_from_spec(TINY_DIT))
    task.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)  # state.fn: None
    return task


def connected(strategy: FSDPStrategy, task: DiTTask) -> FSDPStrategy:
    strategy.connect(task)
    return strategy


def full_checkpoint(path: Path, task: DiTTask, **extra: object) -> Path:
    AtomicCheckpointIO().save_checkpoint({"state_dict": task.state_dict(), "global_step": 3, **extra}, path)
    return path


def sharded_checkpoint(folder: Path, task: DiTTask, meta: dict | None = None) -> Path:
    """Lightning's sharded layout: a distributed checkpoint of ``{"model": ...}`` plus ``meta.pt``."""
    dcp.save({"model": task.state_dict()}, checkpoint_id=str(folder))
    torch.save(meta if meta is not None else {"global_step": 3}, folder / "meta.pt")
    return folder


def crafted(kind: str, root: Path, task: DiTTask, marker: Path) -> Path:
    if kind == "full":
        return full_checkpoint(root / "evil.ckpt", task, payload=CodeOnLoad(marker))
    folder = sharded_checkpoint(root / "evil", task)
    if kind == "sharded_metadata":
        (folder / ".metadata").write_bytes(pickle.dumps(CodeOnLoad(marker)))
    else:
        torch.save({"global_step": 3, "payload": CodeOnLoad(marker)}, folder / "meta.pt")
    return folder


def test_lightnings_own_fsdp_loader_runs_the_pickle(tmp_path: Path) -> None:
    """Why SafeFSDPStrategy exists: the plain strategy executes a crafted full or sharded checkpoint."""
    for kind in ("full", "sharded_metadata"):
        marker = tmp_path / f"pwned_{kind}"
        path = crafted(kind, tmp_path / kind, dit_task(0), marker)
        with contextlib.suppress(Exception, CheckpointException):  # once the code ran, loading may fail
            connected(FSDPStrategy(), dit_task(1)).load_checkpoint(path)
        assert marker.exists(), kind


@pytest.mark.parametrize("kind", ["full", "sharded_metadata", "sharded_meta_pt"])
def test_safe_fsdp_refuses_crafted_checkpoints_in_one_line(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    path = crafted(kind, tmp_path, dit_task(0), marker)
    task = dit_task(1)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    with pytest.raises(RefrainInputError, match="refused to load: it pickles") as caught:
        connected(SafeFSDPStrategy(), task).load_checkpoint(path)
    assert "\n" not in str(caught.value) and "could run code" in str(caught.value)
    assert not marker.exists()
    assert all(torch.equal(v, before[k]) for k, v in task.state_dict().items())  # nothing was loaded


@pytest.mark.parametrize("layout", ["full", "sharded"])
def test_safe_fsdp_still_resumes_genuine_checkpoints(
    tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's sharded branch switches FSDP units to sharded state dicts; an unwrapped CPU model has
    none, and torch's context cannot restore a setting that was never made, so it is a no-op here."""
    monkeypatch.setattr(
        fsdp_module, "_get_sharded_state_dict_context", lambda module: contextlib.nullcontext()
    )
    source, target = dit_task(0), dit_task(1)
    if layout == "full":
        path = full_checkpoint(tmp_path / "last.ckpt", source)
    else:
        path = sharded_checkpoint(tmp_path / "last.ckpt", source)
    loaded = connected(SafeFSDPStrategy(), target).load_checkpoint(path)
    assert loaded["global_step"] == 3
    own = target.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items())


def test_only_strategies_that_load_through_the_safe_loader_are_accepted() -> None:
    for preset in ("default", "ddp", "fsdp"):
        spec = compose_config([f"trainer={preset}"]).trainer.get("strategy")
        if not isinstance(spec, str) and spec is not None:
            from hydra.utils import instantiate

            strategy = instantiate(spec)
            if not isinstance(strategy, FSDPStrategy):
                strategy.checkpoint_io = AtomicCheckpointIO()  # what build_run's plugins set
            check_safe_loading(strategy)
    ddp = DDPStrategy()
    ddp.checkpoint_io = AtomicCheckpointIO()
    check_safe_loading(ddp)
    for unsafe in (FSDPStrategy(), ModelParallelStrategy()):
        with pytest.raises(RefrainInputError, match="loads checkpoints with its own unpickler"):
            check_safe_loading(unsafe)
    plain_io = DDPStrategy()
    plain_io.checkpoint_io = TorchCheckpointIO()
    with pytest.raises(RefrainInputError, match=r"^trainer\.strategy: DDPStrategy"):
        check_safe_loading(plain_io)


def test_ddp_and_single_device_resume_refuse_a_crafted_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = full_checkpoint(tmp_path / "evil.ckpt", dit_task(0), payload=CodeOnLoad(marker))
    for strategy in ("ddp", "auto"):
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, strategy=strategy, plugins=[AtomicCheckpointIO()], logger=False
        )
        check_safe_loading(trainer.strategy)
        with pytest.raises(RefrainInputError, match="refused to load"):
            trainer.strategy.load_checkpoint(path)
    assert not marker.exists()


def test_partial_checkpoints_of_a_killed_save_are_removed_at_the_next_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    keep = ["last.ckpt", "step=00000004.ckpt", "notes.tmp", ".hidden.tmp", ".last.ckpt.short.tmp"]
    stale = [".last.ckpt.k1_9zq2x.tmp", ".step=00000008.ckpt.ab12cd34.tmp"]
    for name in keep + stale:
        (folder / name).write_bytes(b"x" * 1000)
    removed = remove_stale_partial_checkpoints([ModelCheckpoint(dirpath=folder), ModelCheckpoint()])
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)
    err = capsys.readouterr().err
    assert all(f"removed {folder / name}: a partial checkpoint" in err for name in stale)
