"""StemGen and singing2accompaniment on a (tiny) ACE-Step 1.5 release as a user runs them: trainer.py with the
shipped LoRA JSON on a multitrack dataset (its text cache filled by refrain-encode --ace15: no Qwen3
forward in training), then refrain-infer stem / accompany over the release folder with
the adapter, regenerated bit-exact from its sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.multitrack import write_songs
from helpers.tiny_runs import ace15_run_argv, train_in_process
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model

from refrain.cli.ace15 import main as ace15_cli
from refrain.cli.encode import main as encode
from refrain.data.multitrack import prepare_multitrack

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
RUNS = {  # variant -> refrain-infer mode and its extra flags
    "stemgen": ("stem", ["--instrument", "drums"]),
    "singing2accompaniment": ("accompany", []),
}


@pytest.fixture(scope="module")
def world(ace15_release: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ace15_stems")
    prepare_multitrack(write_songs(root / "songs", count=3), root / "ds", val_fraction=0.34, progress=False)
    ace15_cli(["vae", "--checkpoint_dir", str(ace15_release), "--output", str(root / "vae")])
    argv = ["--dataset_path", str(root / "ds"), "--vae_bundle", str(root / "vae"), "--num_workers", "0"]
    assert encode([*argv, "--ace15", str(ace15_release), "--max_frames", "32", "--no_progress"]) == 0
    return {"root": root, "release": ace15_release, "dataset": root / "ds", "vae": root / "vae"}


@pytest.mark.parametrize("variant", sorted(RUNS))
def test_trainer_then_refrain_infer_with_the_shipped_json(
    world, variant: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = world["root"] / variant
    forwards: list[int] = []
    original = Qwen3Model.forward
    monkeypatch.setattr(Qwen3Model, "forward", lambda *a, **k: forwards.append(1) or original(*a, **k))
    code, err = train_in_process(
        ace15_run_argv(world, run_dir, lora=REPO / "lora_configs" / f"{variant}.json"),
        capsys,
    )
    assert code == 0, err[-3000:]
    assert forwards == []  # refrain-encode --ace15 filled the instruction prompts of the stem/rest records
    adapter = run_dir / "adapter"
    assert json.loads((adapter / "refrain_lora.json").read_text())["variant"] == variant
    from refrain.cli.infer import main

    mode, flags = RUNS[variant]
    source = world["root"] / "songs" / "song0" / "mix.flac"
    out = world["root"] / f"{mode}.flac"
    argv = [mode, "--bundle", str(world["release"]), "--lora", str(adapter), "--source", str(source)]
    argv += [*flags, "--prompt", "funk", "--seed", "3", "--out", str(out), "--no_progress"]
    assert main(argv) in (0, None), capsys.readouterr().err[-3000:]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    audio, rate = sf.read(out)
    assert sidecar["mode"] == mode and rate == 48000 and abs(audio.shape[0] / rate - 2.0) < 0.05
    again_argv = ["--from_sidecar", str(out.with_suffix(".json")), "--lora", str(adapter), "--no_progress"]
    assert main(again_argv) in (0, None), capsys.readouterr().err[-3000:]  # the sidecar names base + adapter
    again, _ = sf.read(out.with_name(f"{mode}.again.flac"))
    assert np.array_equal(audio, again)
