"""refrain-demo's command line: stage names, the figures stage in the list, the app command at the end, the
figures printed against their targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from refrain.cli.demo import PROMPTS, STAGES, main
from refrain.cli.demo_report import target_mark
from refrain.data.embedded import embedded_tags


def test_stages_end_with_sampling_two_prompts_and_the_figures() -> None:
    assert list(STAGES)[-2:] == ["sample", "figures"]
    assert set(PROMPTS) == {"calm", "energetic"} and len(set(PROMPTS.values())) == 2


def test_each_prompt_is_a_tag_set_of_the_embedded_corpus() -> None:
    tag_sets = {", ".join(tags) for tags in embedded_tags().values()}
    assert set(PROMPTS.values()) <= tag_sets


def test_an_unknown_stage_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["--output", str(tmp_path), "--stages", "vae,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "figures" in err


def test_the_app_command_is_printed_once_a_dit_bundle_exists(tmp_path: Path, capsys) -> None:
    assert main(["--output", str(tmp_path), "--stages", ""]) == 0
    assert "refrain-app" not in capsys.readouterr().out
    (tmp_path / "dit_bundle").mkdir()
    assert main(["--output", str(tmp_path), "--stages", ""]) == 0
    out = capsys.readouterr().out
    assert f"refrain-app --bundle {tmp_path / 'dit_bundle'}" in out
    assert "steps 20, guidance apg 3, seed 42" in out  # what the printed songs used, for the app's form


def test_the_vae_stage_trains_the_demo_recipe_with_compiled_activations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from refrain.cli import demo

    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(
        demo, "_train", lambda experiment, out, *overrides: calls.append((experiment, *overrides))
    )
    demo.stage_vae(tmp_path)
    assert calls == [("demo_vae", f"run_dir={tmp_path / 'vae'}", "torch_compile=true")]


def test_a_figure_just_under_its_target_does_not_print_as_reaching_it() -> None:
    assert target_mark(0.7959, 0.8) == "0.796 (MISSED, target >= 0.8)"
    assert target_mark(1.5, 1.5) == "1.500 (ok, target >= 1.5)"
