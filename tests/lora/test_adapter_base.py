"""An adapter records the base bundle it was trained on; merging it into, or sampling it on, another base is
refused in one line unless --allow_other_base says so. refrain-infer checks this before loading the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.bundles import fast_base_bundle
from helpers.lora import perturb_trainable

from refrain.bundles.dit import open_dit_bundle
from refrain.cli.infer import main as infer_main
from refrain.cli.lora import main as lora_main
from refrain.lora.adapters import save_adapter
from refrain.lora.config import parse_lora_spec
from refrain.lora.inject import inject_lora
from refrain.lora.model import base_facts

SPEC = {"r": 4, "lora_alpha": 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapter_base")
    bundle = fast_base_bundle(root)
    spec = parse_lora_spec(SPEC)
    base = open_dit_bundle(bundle).build_model()
    facts = base_facts(base, bundle)
    model = inject_lora(base, spec)
    perturb_trainable(model, seed=4)
    own = save_adapter(model, root / "own", spec, facts)
    other = save_adapter(
        model, root / "other", spec, {**facts, "bundle_hash": "f" * 64, "bundle": "/elsewhere/base"}
    )
    return {"root": root, "bundle": bundle, "own": own, "other": other}


def test_merge_refuses_an_adapter_of_another_base(world, tmp_path, capsys) -> None:
    args = ["merge", "--bundle", str(world["bundle"]), "--lora", str(world["other"]), "--out"]
    assert lora_main([*args, str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "\n" not in err and "was trained on base bundle ffffffffffff" in err and "--allow_other_base" in err
    )
    assert "/elsewhere/base" in err and not (tmp_path / "m").exists()
    assert lora_main([*args, str(tmp_path / "m2"), "--allow_other_base"]) == 0
    assert (
        lora_main(
            [
                "merge",
                "--bundle",
                str(world["bundle"]),
                "--lora",
                str(world["own"]),
                "--out",
                str(tmp_path / "m3"),
            ]
        )
        == 0
    )


def test_infer_refuses_it_before_loading_anything(world, tmp_path, capsys, monkeypatch) -> None:
    from refrain.sampling.pipeline import Pipeline

    def no_load(*args, **kwargs):  # the check must come first: loading takes seconds on a real bundle
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(Pipeline, "from_bundle", classmethod(no_load))
    base = [
        "text2music",
        "--bundle",
        str(world["bundle"]),
        "--duration",
        "0.5",
        "--steps",
        "2",
        "--no_progress",
    ]
    code = infer_main([*base, "--lora", str(world["other"]), "--out", str(tmp_path / "a.flac")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "was trained on base bundle" in err
    code = infer_main(
        [*base, "--lyrics_file", str(tmp_path / "missing.lrc"), "--out", str(tmp_path / "b.flac")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--lyrics_file" in err and "no such file" in err
    code = infer_main([*base, "--guidance_interval", "2", "--out", str(tmp_path / "c.flac")])
    assert code == 2 and "\n" not in capsys.readouterr().err.strip()


@pytest.mark.slow
def test_infer_samples_with_the_override(world, tmp_path) -> None:
    out = tmp_path / "song.flac"
    argv = [
        "text2music",
        "--bundle",
        str(world["bundle"]),
        "--duration",
        "0.5",
        "--steps",
        "2",
        "--no_progress",
        "--lora",
        str(world["other"]),
        "--allow_other_base",
        "--out",
        str(out),
    ]
    assert infer_main(argv) == 0 and out.is_file()
