"""refrain-eval bundle: songs generated through refrain-infer with fixed seeds, base vs adapted rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.bundles import fast_base_bundle
from helpers.eval_models import write_tiny_clap
from helpers.lora import perturb_trainable
from helpers.tiny_runs import write_songs

from refrain.bundles.dit import open_dit_bundle
from refrain.cli.eval import main
from refrain.data.prepare import PrepareOptions, prepare_dataset
from refrain.lora.adapters import save_adapter
from refrain.lora.config import parse_lora_spec
from refrain.lora.inject import inject_lora
from refrain.models.teachers import create_random_hubert

PROMPTS = [
    {"name": "calm", "prompt": "acoustic, calm", "lyrics": "", "duration": 1.5, "seed": 1},
    {"name": "loud", "prompt": "electronic, energetic", "lyrics": "", "duration": 1.5, "seed": 2},
    {"name": "rap", "prompt": "hip hop, rap", "lyrics": "", "duration": 1.5, "seed": 3},
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundle_eval")
    bundle = fast_base_bundle(root)
    spec = parse_lora_spec({"variant": "text2sample", "r": 4, "lora_alpha": 8})
    model = inject_lora(open_dit_bundle(bundle).build_model(), spec)
    perturb_trainable(model, seed=5, std=0.3)
    dataset = root / "dataset"
    prepare_dataset(PrepareOptions(output_dir=dataset, input_dir=write_songs(root / "songs"), progress=False))
    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    return {
        "root": root,
        "bundle": bundle,
        "adapter": save_adapter(model, root / "adapter", spec),
        "dataset": dataset,
        "prompts": prompts,
        "clap": write_tiny_clap(root / "clap"),
        "mert": create_random_hubert(root / "mert", hidden_size=16, num_layers=2, conv_channels=8),
    }


def run(world: dict[str, Path], out: Path, lora: str) -> dict:
    argv = [
        "bundle",
        "--bundle",
        str(world["bundle"]),
        "--prompts",
        str(world["prompts"]),
        "--lora",
        lora,
        "--dataset_path",
        str(world["dataset"]),
        "--steps",
        "3",
        "--mert",
        str(world["mert"]),
        "--mert_sample_rate",
        "16000",
        "--clap",
        str(world["clap"]),
        "--cache_dir",
        str(world["root"] / "cache"),
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    return json.loads((out / "eval.json").read_text())


def test_adapter_moves_the_songs_and_switched_off_it_does_not(world: dict[str, Path]) -> None:
    on = run(world, world["root"] / "on", f"{world['adapter']}:1")
    base, adapted = on["rows"]
    assert (base["set"], adapted["set"]) == ("base", "adapted") and base["songs"] == adapted["songs"] == 3
    assert {"fad_mert", "fad_clap", "clap", "loudness_lufs"} <= set(base)
    assert base["fad_mert"] != adapted["fad_mert"]
    per_prompt = on["per_prompt"]
    assert [r["prompt"] for r in per_prompt["adapted"]] == ["calm", "loud", "rap"]
    assert {"clap", "dist_mert", "dist_clap"} <= set(per_prompt["base"][0])
    assert (world["root"] / "on" / "overall.png").is_file() and (
        world["root"] / "on" / "per_prompt.png"
    ).is_file()
    assert sorted(p.name for p in (world["root"] / "on" / "base").glob("*.json")) == [
        "calm.json",
        "loud.json",
        "rap.json",
    ]

    off = run(world, world["root"] / "off", f"{world['adapter']}:0")
    base_off, adapted_off = off["rows"]
    # Equal to float32 rounding, not bit for bit: a LoRA-wrapped projection keeps the unfused gated residual
    # (h + gate * proj(x)) while the plain model folds the gate into its GEMM (fused.gated_residual_linear).
    assert {k: v for k, v in adapted_off.items() if k != "set"} == pytest.approx(
        {k: v for k, v in base_off.items() if k != "set"}, rel=1e-4, abs=1e-6
    )
    assert base_off == base  # same prompts, same seeds: the base songs are the same songs
