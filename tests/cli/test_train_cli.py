"""ACE-Step flags become Hydra overrides; bad flags and keys get one-line errors with close matches."""

from __future__ import annotations

import pytest

from refrain.cli.train import ACESTEP_FLAGS, help_text, translate_argv
from refrain.errors import RefrainInputError


def test_every_acestep_flag_translates_to_its_key() -> None:
    for flag, key in ACESTEP_FLAGS.items():
        assert translate_argv([f"--{flag}", "7"]) == [f"{key}=7"]
        assert translate_argv([f"--{flag}=7"]) == [f"{key}=7"]


def test_flags_mix_with_plain_overrides_in_order() -> None:
    argv = [
        "experiment=vae_mp3",
        "--dataset_path",
        "/data/songs",
        "trainer.log_every_n_steps=5",
        "--max_steps",
        "100",
    ]
    assert translate_argv(argv) == [
        "experiment=vae_mp3",
        "dataset_path=/data/songs",
        "trainer.log_every_n_steps=5",
        "trainer.max_steps=100",
    ]


def test_values_hydra_would_misread_are_quoted() -> None:
    assert translate_argv(["--devices", "0,1"]) == ["trainer.devices='0,1'"]
    assert translate_argv(["--dataset_path", "my songs/it's"]) == ["dataset_path='my songs/it\\'s'"]
    assert translate_argv(["--precision", "bf16-mixed"]) == ["trainer.precision=bf16-mixed"]


def test_unknown_flag_names_closest_valid_ones() -> None:
    with pytest.raises(RefrainInputError) as info:
        translate_argv(["--learnig_rate", "1e-4"])
    message = str(info.value)
    assert "\n" not in message
    assert "--learnig_rate" in message and "--learning_rate" in message


def test_flag_without_value_is_an_error() -> None:
    with pytest.raises(RefrainInputError, match="needs a value"):
        translate_argv(["--max_steps"])


def test_hydra_flags_pass_through() -> None:
    assert translate_argv(["--cfg", "job", "--max_steps", "3"]) == ["--cfg", "job", "trainer.max_steps=3"]


def test_help_documents_both_styles() -> None:
    text = help_text()
    assert "--dataset_path" in text and "Hydra overrides" in text and "logger" in text


def test_batch_size_is_an_alias_of_the_data_key() -> None:
    assert translate_argv(["--batch_size", "3"]) == ["data.batch_size=3"]


def test_validate_only_is_a_switch() -> None:
    assert translate_argv(["--validate_only", "--max_steps", "1"]) == [
        "validate_only=true",
        "trainer.max_steps=1",
    ]
    assert translate_argv(["--validate_only=false"]) == ["validate_only=false"]


def test_help_lists_only_groups_with_options() -> None:
    text = help_text()
    assert "(none yet)" not in text and "--validate_only" in text and "--batch_size" in text


@pytest.mark.parametrize(
    ("argv", "subject", "kind"),
    [
        (["experiment=demo_vae", "trainer.max_steps=abc"], "--max_steps / trainer.max_steps", "an integer"),
        (["experiment=demo_vae", "--learning_rate", "fast"], "--learning_rate / learning_rate", "a number"),
    ],
)
def test_a_word_where_a_number_belongs_is_one_line(argv, subject, kind, capsys) -> None:
    from refrain.cli.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith(f"error: {subject}: ") and f"is not {kind}" in err


def test_words_stay_allowed_where_lightning_takes_them() -> None:
    from refrain.cli.train import check_value_types

    overrides = ["experiment=demo_vae", "trainer.devices=auto", "trainer.precision=bf16-mixed"]
    check_value_types({"trainer": {"devices": "auto", "precision": "bf16-mixed"}}, overrides)


def test_lora_help_names_the_console_script(capsys) -> None:
    from refrain.cli.lora import build_parser

    assert build_parser().prog == "refrain-lora"
    assert "python -m" not in build_parser().format_help()
