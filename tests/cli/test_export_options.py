"""refrain-export's DiT flags reach the DiT exporter and are refused for other kinds."""

from __future__ import annotations

import pytest

from refrain.cli.export import build_parser, exporter_options
from refrain.errors import RefrainInputError


def test_dit_flags_become_exporter_keywords() -> None:
    args = build_parser().parse_args(
        ["--kind", "dit", "--checkpoint", "c.ckpt", "--output", "b", "--vae_bundle", "v", "--raw_weights"]
    )
    assert exporter_options(args) == {
        "vae_bundle": "v",
        "phoneme_vocab": None,
        "text_encoder_dir": None,
        "use_ema": False,
    }


def test_dit_flags_are_refused_for_a_vae_export() -> None:
    args = build_parser().parse_args(["--checkpoint", "c.ckpt", "--output", "b", "--phoneme_vocab", "p.json"])
    with pytest.raises(RefrainInputError, match="--phoneme_vocab: only apply to --kind dit"):
        exporter_options(args)
    assert exporter_options(build_parser().parse_args(["--checkpoint", "c", "--output", "b"])) == {}
