"""Reliability: resumable sampler/loader, RNG state, atomic checkpoints, preemption signals, safe loading,
non-finite guard and the skipped-items report."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from helpers.resilience_toys import DiTBatches, NoisyToyTask, read_losses, tiny_dit_model, toy_config
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from refrain.data.resumable_sampler import ResumableDataLoader, ResumableSampler, split_key
from refrain.errors import RefrainInputError
from refrain.tasks.dit_task import DiTTask
from refrain.training import checkpoint_io
from refrain.training.checkpoint_io import AtomicCheckpointIO, load_torch_file
from refrain.training.dit_plotting import SamplePlotter
from refrain.training.ema import EMA
from refrain.training.faults import NonFiniteGuard, NonFiniteTrainingError, SkippedItemsReport
from refrain.training.rng_state import capture_rng_state, restore_rng_state
from refrain.training.run import train

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "helpers" / "resilience_toys.py"


# ----- sampler and loader -----
def test_ranks_split_each_global_batch_of_the_single_process_order() -> None:
    items = list(range(10))
    single = list(ResumableSampler(items, seed=3, num_replicas=1, rank=0))
    ranks = [list(ResumableSampler(items, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(single) == items
    for j in range(2):  # per-rank batch 2 <-> global batch 4
        assert sorted(ranks[0][2 * j : 2 * j + 2] + ranks[1][2 * j : 2 * j + 2]) == sorted(
            single[4 * j : 4 * j + 4]
        )
    other_epoch = ResumableSampler(items, seed=3, num_replicas=1, rank=0)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != single


class Keys(Dataset):
    """Returns the key it is asked for, so a test sees exactly what the sampler yielded."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int) -> int:
        return key


def loader(items: list[int], seed: int = 1) -> ResumableDataLoader:
    keys = Keys(len(items))
    return ResumableDataLoader(keys, batch_size=3, sampler=ResumableSampler(keys, seed=seed, epoch_keys=True))


def test_loader_state_continues_the_epoch_where_the_loop_stopped() -> None:
    items = list(range(10))
    reference = loader(items)
    reference.sampler.set_epoch(2)
    full = [b.tolist() for b in reference]
    assert {split_key(k, 10)[0] for b in full for k in b} == {2}
    assert sorted(split_key(k, 10)[1] for b in full for k in b) == items

    interrupted = loader(items)
    interrupted.sampler.set_epoch(2)
    iterator = iter(interrupted)
    taken = [next(iterator).tolist() for _ in range(2)]
    state = interrupted.state_dict()
    assert (state["epoch"], state["batches"]) == (2, 2)

    resumed = loader(items)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # Lightning calls this at the epoch start with the same epoch
    rest = [b.tolist() for b in resumed]
    assert taken + rest == full
    assert resumed.state_dict()["batches"] == 4  # counts on from the resume point (second resume works)

    after_last = loader(items)
    after_last.load_state_dict({**state, "batches": 4})
    assert after_last.sampler.epoch == 3 and len(list(after_last)) == 4


def test_resume_on_another_world_size_keeps_ranks_in_step() -> None:
    samplers = [ResumableSampler(list(range(12)), seed=0, num_replicas=3, rank=r) for r in range(3)]
    for sampler in samplers:
        sampler.resume(0, 5)  # saved by 2 ranks after 5 samples: rounded down to 3
    lengths = [len(list(s)) for s in samplers]
    assert lengths == [3, 3, 3]


# ----- RNG state -----
def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    torch.rand(3), np.random.normal(size=3), random.gauss(0, 1)  # leave a cached gaussian behind
    state = capture_rng_state()
    first = (torch.rand(4), np.random.normal(size=4), random.gauss(0, 1), random.random())
    torch.save({"rng": state}, tmp_path / "rng.pt")
    restore_rng_state(load_torch_file(tmp_path / "rng.pt")["rng"])
    again = (torch.rand(4), np.random.normal(size=4), random.gauss(0, 1), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]


# ----- atomic checkpoints -----
def test_an_exception_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    io_plugin, path = AtomicCheckpointIO(), tmp_path / "ckpts" / "last.ckpt"
    io_plugin.save_checkpoint({"value": torch.tensor(1)}, path)

    def half_then_fail(obj: Any, target: Any) -> None:
        Path(target).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io.torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        io_plugin.save_checkpoint({"value": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(io_plugin.load_checkpoint(path)["value"]) == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def run_driver(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DRIVER), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def step_of(path: Path) -> int:
    return int(load_torch_file(path)["global_step"])


@pytest.mark.slow
def test_a_run_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    killed = run_driver(
        f"run_dir={run}",
        "trainer.max_steps=12",
        "every_n_train_steps=4",
        "+callbacks.die._target_=helpers.resilience_toys.KillDuringSave",
        "+callbacks.die.step=8",
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["last.ckpt", "step=00000004.ckpt"]
    half_written = list(folder.glob(".*.tmp"))  # the kill really happened mid-write
    assert len(half_written) == 1
    with pytest.raises(RefrainInputError, match="not a readable checkpoint"):
        load_torch_file(half_written[0])
    assert step_of(folder / "last.ckpt") == 4
    resumed = train(toy_config(run, "trainer.max_steps=6", f"ckpt_path={folder / 'last.ckpt'}"))
    assert resumed.trainer.global_step == 6
    assert not half_written[0].exists() and not list(folder.glob(".*.tmp"))  # removed at this start


# ----- preemption signals -----
@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_preemption_signal_saves_last_and_exits_cleanly(tmp_path: Path, name: str) -> None:
    """Sent at step 6, the last batch of epoch 0, after GracefulStop's own check of that batch: the next
    batch end (step 7) saves and stops; the resume continues the uninterrupted run bit for bit."""
    run, saved_at = tmp_path / "run", 7
    losses = ["+callbacks.record._target_=helpers.resilience_toys.LossRecorder"]
    stopped = run_driver(
        f"run_dir={run}",
        "trainer.max_steps=30",
        "every_n_train_steps=100",
        *losses,
        f"+callbacks.record.path={tmp_path / 'a.csv'}",
        "+callbacks.kill._target_=helpers.resilience_toys.KillAt",
        "+callbacks.kill.step=6",
        f"+callbacks.kill.sig={name}",
    )
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert f"{name} at step {saved_at}: saved" in stopped.stderr
    last = run / "checkpoints" / "last.ckpt"
    assert step_of(last) == saved_at
    assert max(read_losses(tmp_path / "a.csv")) == saved_at
    resumed = train(
        toy_config(
            run,
            "trainer.max_steps=10",
            f"ckpt_path={last}",
            *losses,
            f"+callbacks.record.path={tmp_path / 'b.csv'}",
        )
    )
    train(
        toy_config(
            tmp_path / "s", "trainer.max_steps=10", *losses, f"+callbacks.record.path={tmp_path / 'c.csv'}"
        )
    )
    assert resumed.trainer.global_step == 10
    reference = read_losses(tmp_path / "c.csv")
    assert read_losses(tmp_path / "b.csv") == {s: reference[s] for s in range(saved_at + 1, 11)}


# ----- safe loading -----
class CodeOnLoad:
    """Unpickling this would create ``marker`` (a stand-in for any code a crafted file runs)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": CodeOnLoad(marker)}, evil)
    with pytest.raises(RefrainInputError) as caught:
        load_torch_file(evil)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(evil))
    assert "refused to load" in message and "could run code" in message and "Fix:" in message
    with pytest.raises(RefrainInputError, match="refused to load"):
        train(toy_config(tmp_path / "run", "trainer.max_steps=2", f"ckpt_path={evil}"))
    assert not marker.exists()


def test_a_truncated_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.ones(1000)}, good)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(good.read_bytes()[:500])
    with pytest.raises(RefrainInputError, match=r"not a readable checkpoint .*Fix:") as caught:
        load_torch_file(broken)
    assert "\n" not in str(caught.value)


def test_text_encoder_runs_no_shipped_code_without_opt_in(tmp_path: Path) -> None:
    from refrain.models.text_encoder import TextEncoder, default_text_encoder_dir

    source, folder, marker = default_text_encoder_dir(), tmp_path / "encoder", tmp_path / "pwned"
    folder.mkdir()
    for item in source.iterdir():
        if item.is_file() and item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text())
    config.update(
        model_type="shady_bert", auto_map={"AutoConfig": "shady.ShadyConfig", "AutoModel": "shady.ShadyModel"}
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "shady.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    with pytest.raises(RefrainInputError, match="trust_remote_code"):
        TextEncoder(folder, trust_remote_code=False)
    assert not marker.exists()


# ----- non-finite updates -----
def test_guard_skips_counts_and_stops_naming_the_step_keeping_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    cfg = toy_config(
        tmp_path,
        "trainer.max_steps=30",
        "every_n_train_steps=2",
        "task.nan_from_step=5",
        "task.noisy=false",
        "callbacks.nonfinite.max_consecutive=3",
    )
    with pytest.raises(NonFiniteTrainingError, match=r"^step 8: 3 consecutive non-finite updates") as caught:
        train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert str(last) in str(caught.value) and "\n" not in str(caught.value)
    checkpoint = load_torch_file(last)
    assert checkpoint["global_step"] == 6  # step 8's checkpoint was never written
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    adam_steps = {float(s["step"]) for s in checkpoint["optimizer_states"][0]["state"].values()}
    assert adam_steps == {5.0}  # the skipped step 6 did not touch the weights or AdamW's moments
    assert not (tmp_path / "checkpoints" / "step=00000008.ckpt").exists()


def tiny_trainer(tmp_path: Path, callbacks: list[pl.Callback], max_steps: int, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        callbacks=callbacks,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_guard_reads_the_dit_tasks_own_counter(tmp_path: Path) -> None:
    task = DiTTask(tiny_dit_model(), ema=partial(EMA, decay=0.99), plotter=SamplePlotter(tmp_path))
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    trainer = tiny_trainer(tmp_path, [NonFiniteGuard(max_consecutive=3), saver], max_steps=12)
    with (
        pytest.warns(UserWarning, match="non-finite DiT loss"),
        pytest.raises(NonFiniteTrainingError, match=r"^step 6: 3 consecutive"),
    ):
        trainer.fit(task, DiTBatches(count=12, nan_from=3))
    assert task.nonfinite_skips == 3
    assert load_torch_file(tmp_path / "ckpt" / "last.ckpt")["global_step"] == 5


# ----- failed samples -----
class FlakyItems(Dataset):
    """Every fifth item fails to load (None), as a missing file does in the real datasets."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        if index % 5 == 0:
            return None
        inputs = torch.full((4,), float(index) / 20)
        return {"inputs": inputs, "targets": inputs.sum(0, keepdim=True)}


def collate_counting(items: list[Any]) -> dict[str, Any]:
    good = [i for i in items if i is not None]
    return {
        "inputs": torch.stack([i["inputs"] for i in good]),
        "targets": torch.stack([i["targets"] for i in good]),
        "skipped": len(items) - len(good),
    }


class FlakyData(pl.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(FlakyItems(), batch_size=4, collate_fn=collate_counting)


class CountingData(FlakyData):
    """Like the DiT datamodule: the dataset counts failures itself (``skipped_items``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []

    def skipped_items(self, stage: str = "train", reset: bool = False) -> int:
        self.calls.append((stage, reset))
        return 7


@pytest.mark.parametrize(("data", "per_epoch"), [(FlakyData, 4), (CountingData, 7)])
def test_failed_items_are_counted_logged_and_reported_each_epoch(
    tmp_path: Path, data: type, per_epoch: int
) -> None:
    report = SkippedItemsReport()
    datamodule = data()
    trainer = tiny_trainer(tmp_path, [report], max_steps=-1, max_epochs=2)
    with pytest.warns(
        UserWarning,
        match=rf"epoch 1: {per_epoch} training items failed to load .*\({2 * per_epoch} in this run\)",
    ):
        trainer.fit(NoisyToyTask(noisy=False), datamodule)
    assert trainer.global_step == 10  # the run went on
    assert float(trainer.callback_metrics["data/skipped_items_epoch"]) == per_epoch
    assert report.total == 2 * per_epoch
    if isinstance(datamodule, CountingData):
        assert datamodule.calls == [("train", True), ("train", True)]
