"""Exact resume: a run SIGKILLed mid-epoch and resumed from its last checkpoint matches, bit for bit,
the run that was never interrupted (weights, optimizer, scheduler, EMA, every RNG, the loader's place)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.resilience_toys import read_losses, toy_config

from refrain.training.run import train

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "helpers" / "resilience_toys.py"
# 24 items, batch 4: 6 batches per epoch. Checkpoints at 4, 8, 12, 16; the kill at 10 loses steps 9-10
# and resumes from step 8 (epoch 1, 2 batches in), through the epoch-2 boundary at step 12.
COMMON = ["every_n_train_steps=4", "data.num_workers=2"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The killed run is a subprocess on one thread; the in-process runs use the same arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def recorder(path: Path) -> list[str]:
    return [
        "+callbacks.record._target_=helpers.resilience_toys.LossRecorder",
        f"+callbacks.record.path={path}",
    ]


def run_subprocess(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(DRIVER), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_losses_bit_for_bit(tmp_path: Path) -> None:
    killed_dir, straight_dir = tmp_path / "killed", tmp_path / "straight"
    killed = run_subprocess(
        [
            f"run_dir={killed_dir}",
            "trainer.max_steps=16",
            *COMMON,
            *recorder(tmp_path / "killed.csv"),
            "+callbacks.kill._target_=helpers.resilience_toys.KillAt",
            "+callbacks.kill.step=10",
        ]
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = killed_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == [
        "last.ckpt",
        "step=00000004.ckpt",
        "step=00000008.ckpt",
    ]
    resumed = train(
        toy_config(
            killed_dir,
            "trainer.max_steps=16",
            f"ckpt_path={checkpoints / 'last.ckpt'}",
            *COMMON,
            *recorder(tmp_path / "resumed.csv"),
        )
    )
    straight = train(
        toy_config(straight_dir, "trainer.max_steps=16", *COMMON, *recorder(tmp_path / "straight.csv"))
    )
    before = read_losses(tmp_path / "killed.csv")
    after = read_losses(tmp_path / "resumed.csv")
    reference = read_losses(tmp_path / "straight.csv")
    assert sorted(before) == list(range(1, 11))
    assert sorted(after) == list(range(9, 17))
    assert {s: before[s] for s in range(1, 11)} == {s: reference[s] for s in range(1, 11)}
    assert after == {s: reference[s] for s in range(9, 17)}  # the same float bits, step by step
    assert resumed.trainer.global_step == straight.trainer.global_step == 16
    final_resumed, final_straight = weights(resumed.last_checkpoint), weights(straight.last_checkpoint)
    assert final_resumed.keys() == final_straight.keys()
    assert all(torch.equal(final_resumed[k], final_straight[k]) for k in final_straight)  # EMA included


def test_without_exact_resume_the_resumed_losses_differ(tmp_path: Path) -> None:
    """The control: the same stop/resume with the RNG callback off drifts (so the test above can fail)."""
    first = train(toy_config(tmp_path / "a", "trainer.max_steps=8", *COMMON, "callbacks.resume=null"))
    resumed = train(
        toy_config(
            tmp_path / "a",
            "trainer.max_steps=12",
            f"ckpt_path={first.last_checkpoint}",
            *COMMON,
            "callbacks.resume=null",
            *recorder(tmp_path / "resumed.csv"),
        )
    )
    straight = train(
        toy_config(
            tmp_path / "b",
            "trainer.max_steps=12",
            *COMMON,
            "callbacks.resume=null",
            *recorder(tmp_path / "straight.csv"),
        )
    )
    assert resumed.trainer.global_step == straight.trainer.global_step == 12
    after, reference = read_losses(tmp_path / "resumed.csv"), read_losses(tmp_path / "straight.csv")
    assert any(after[s] != reference[s] for s in range(9, 13))


@pytest.mark.parametrize("stop", [6, 8])
def test_stop_at_max_steps_then_resume_matches_in_process(tmp_path: Path, stop: int) -> None:
    """The same property without a subprocess, saved at an epoch's last batch (6) or inside one (8)."""
    common = [f"every_n_train_steps={stop}", "data.num_workers=2"]
    first = train(toy_config(tmp_path / "a", f"trainer.max_steps={stop}", *common))
    assert torch.load(first.last_checkpoint, weights_only=True)["global_step"] == stop
    train(
        toy_config(
            tmp_path / "a",
            "trainer.max_steps=14",
            f"ckpt_path={first.last_checkpoint}",
            *common,
            *recorder(tmp_path / "resumed.csv"),
        )
    )
    train(toy_config(tmp_path / "b", "trainer.max_steps=14", *common, *recorder(tmp_path / "straight.csv")))
    after, reference = read_losses(tmp_path / "resumed.csv"), read_losses(tmp_path / "straight.csv")
    assert after == {s: reference[s] for s in range(stop + 1, 15)}


@pytest.mark.slow
def test_the_vae_task_resumes_bit_for_bit(tmp_path: Path) -> None:
    """The real VAETask: posterior noise, GAN start, EMA, two optimizers and LR warm-ups all resume."""
    from helpers.resilience_toys import vae_config

    common = ["every_n_train_steps=3", "data.frames=2048"]
    first = train(vae_config(tmp_path / "a", "trainer.max_steps=3", *common))
    resumed = train(
        vae_config(
            tmp_path / "a",
            "trainer.max_steps=6",
            f"ckpt_path={first.last_checkpoint}",
            *common,
            *recorder(tmp_path / "resumed.csv"),
        )
    )
    straight = train(
        vae_config(tmp_path / "b", "trainer.max_steps=6", *common, *recorder(tmp_path / "straight.csv"))
    )
    after, reference = read_losses(tmp_path / "resumed.csv"), read_losses(tmp_path / "straight.csv")
    assert sorted(after) == [4, 5, 6]
    assert after == {s: reference[s] for s in (4, 5, 6)}
    final_resumed, final_straight = weights(resumed.last_checkpoint), weights(straight.last_checkpoint)
    assert any(k.startswith("ema.") for k in final_straight)
    assert all(torch.equal(final_resumed[k], final_straight[k]) for k in final_straight)
