"""Source layouts are a registry: the CLI's choices and auto detection come from it, and a new layout is
one registered SourceLayout."""

from __future__ import annotations

from pathlib import Path

import pytest

from refrain.cli.prepare import build_parser
from refrain.data import sources
from refrain.data.sources import (
    SourceLayout,
    detect_source,
    register_source,
    scan_source,
    sibling,
    source_layouts,
    source_names,
)


def _choices() -> tuple[str, ...]:
    action = next(a for a in build_parser()._actions if a.dest == "source")
    return tuple(action.choices)


def test_cli_source_choices_are_the_registry() -> None:
    assert _choices() == source_names()
    assert {"auto", "acestep", "lrc", "embedded"} <= set(source_names())
    assert [name for name, layout in source_layouts().items() if layout.fallback] == ["acestep"]


def test_a_registered_layout_is_detected_scanned_and_offered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "_LAYOUTS", dict(source_layouts()))
    register_source(
        SourceLayout(
            "meta_json",
            "x.ogg + x.json",
            sidecars=lambda audio: (sibling(audio, ".json"), None, "structured"),
            detect=lambda names: any(name.endswith(".json") for name in names),
            priority=5,
        )
    )
    (tmp_path / "a.ogg").write_bytes(b"x")
    (tmp_path / "a.json").write_text("{}")
    assert detect_source(tmp_path) == "meta_json"
    resolved, (item,) = scan_source("auto", tmp_path)
    assert resolved == "meta_json" and item.tags_file == (tmp_path / "a.json").resolve()
    assert item.lyrics_file is None and "meta_json" in _choices()


def test_a_layout_is_a_folder_rule_or_a_corpus_and_names_are_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_LAYOUTS", dict(source_layouts()))
    with pytest.raises(ValueError, match="exactly one of"):
        register_source(SourceLayout("nothing", "neither"))
    with pytest.raises(ValueError, match="registered twice"):
        register_source(SourceLayout("lrc", "another lrc", scan=list))
