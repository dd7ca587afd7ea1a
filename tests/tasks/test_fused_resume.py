"""Fused AdamW (the default for every task) keeps exact resume: the real DiT task through trainer.py,
stopped and resumed, ends with the weights of the run that never stopped, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.tiny_runs import dit_argv, make_world

from refrain.cli.train import main


@pytest.mark.slow
def test_fused_adamw_dit_resume_is_bit_exact(tmp_path: Path) -> None:
    world = make_world(tmp_path / "world")
    quiet = ["--every_plot_step", "1000", "task.ema=null"]
    main([*dit_argv(world, tmp_path / "straight", steps=4), *quiet])
    # the straight run encoded every song online and cached it; the stopped run reads those cache entries,
    # so this also proves that online and cached conditioning train identically
    main([*dit_argv(world, tmp_path / "stopped", steps=2), *quiet])
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    main([*dit_argv(world, tmp_path / "stopped", steps=4), *quiet, "--ckpt_path", str(last)])
    final = "step=00000004.ckpt"
    straight = torch.load(
        tmp_path / "straight" / "checkpoints" / final, weights_only=True, map_location="cpu"
    )
    resumed = torch.load(tmp_path / "stopped" / "checkpoints" / final, weights_only=True, map_location="cpu")
    assert straight["global_step"] == resumed["global_step"] == 4
    assert straight["optimizer_states"][0]["param_groups"][0]["fused"] is True
    for name, tensor in straight["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
