"""refrain-infer samples from a DiT training checkpoint directly (no refrain-export step), and its sidecar
regenerates the same song from the same checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.bundles import write_checkpoint

from refrain.cli.infer import main

FAST = ["--steps", "2", "--guidance", "cfg", "--guidance_scale", "3", "--no_progress", "--seed", "3"]


@pytest.mark.slow
def test_text2music_from_a_checkpoint_and_regeneration(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path)
    out = tmp_path / "song.flac"
    code = main(
        [
            "text2music",
            "--bundle",
            str(checkpoint),
            "--prompt",
            "synth pop",
            "--duration",
            "1.0",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0 and sf.info(out).frames == 44100
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["bundle"]["path"] == str(checkpoint.resolve())
    assert sidecar["bundle"]["hash"].startswith("checkpoint:")
    again = tmp_path / "again.flac"
    assert main(["--from_sidecar", str(out.with_suffix(".json")), "--out", str(again), "--no_progress"]) == 0
    assert np.array_equal(sf.read(out)[0], sf.read(again)[0])
    assert not list(tmp_path.glob("refrain-ckpt-*"))  # the temporary bundle is gone
