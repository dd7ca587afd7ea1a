"""`trainer.py` / `refrain-train`: Hydra overrides, plus ACE-Step's --flag command line translated to them."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from refrain.errors import RefrainInputError

# ACE-Step trainer flag -> the refrain config key it sets (plus two of refrain's own, at the end).
ACESTEP_FLAGS: dict[str, str] = {
    "dataset_path": "dataset_path",
    "checkpoint_dir": "checkpoint_dir",
    "lora_config_path": "lora_config_path",
    "exp_name": "exp_name",
    "learning_rate": "learning_rate",
    "max_steps": "trainer.max_steps",
    "epochs": "trainer.max_epochs",
    "precision": "trainer.precision",
    "devices": "trainer.devices",
    "num_nodes": "trainer.num_nodes",
    "accumulate_grad_batches": "trainer.accumulate_grad_batches",
    "num_workers": "num_workers",
    "every_n_train_steps": "every_n_train_steps",
    "every_plot_step": "every_plot_step",
    "logger_dir": "logger_dir",
    "ckpt_path": "ckpt_path",
    "shift": "shift",
    "gradient_clip_val": "gradient_clip_val",
    "gradient_clip_algorithm": "gradient_clip_algorithm",
    "reload_dataloaders_every_n_epochs": "trainer.reload_dataloaders_every_n_epochs",
    "val_check_interval": "trainer.val_check_interval",
    # refrain's own additions in the same style (the DiT side needs them)
    "vae_bundle": "vae_bundle",
    "text_encoder_dir": "text_encoder_dir",
    "batch_size": "data.batch_size",  # ACE-Step users type it; the key lives in the data group
}

# Switches: `--validate_only` alone means true (`--validate_only=false` turns it off again).
SWITCH_FLAGS: dict[str, str] = {"validate_only": "validate_only", "torch_compile": "torch_compile"}
SWITCH_HELP: dict[str, str] = {
    "validate_only": "validate a --ckpt_path or --checkpoint_dir, no training",
    "torch_compile": "compile the backbone's repeated blocks with torch.compile",
}

# Hydra's own flags pass through untouched.
HYDRA_FLAGS = {
    "--multirun",
    "-m",
    "--cfg",
    "-c",
    "--resolve",
    "--package",
    "-p",
    "--info",
    "-i",
    "--hydra-help",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--run",
    "-r",
    "--shell-completion",
    "-sc",
}

# Keys whose number default also takes words (Lightning: devices=auto, devices="0,1").
WORDS_ALLOWED = {"trainer.devices"}

_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_./:+\-]*$")


def quote_value(value: str) -> str:
    """Quote a flag value for Hydra's override grammar unless it is plainly safe (paths with commas, spaces...)."""
    if value == "" or not _PLAIN_VALUE.match(value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return value


def translate_argv(argv: Sequence[str]) -> list[str]:
    """Turn `--dataset_path X --max_steps 10 trainer.precision=bf16-mixed` into Hydra overrides."""
    overrides: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg.startswith("--") and arg.split("=", 1)[0] not in HYDRA_FLAGS:
            name, has_value, value = arg[2:].partition("=")
            if name in SWITCH_FLAGS:
                overrides.append(f"{SWITCH_FLAGS[name]}={quote_value(value) if has_value else 'true'}")
                continue
            if name not in ACESTEP_FLAGS:
                close = difflib.get_close_matches(name, [*ACESTEP_FLAGS, *SWITCH_FLAGS], n=3, cutoff=0.5)
                hint = (
                    f"did you mean {', '.join('--' + c for c in close)}?"
                    if close
                    else "see `python trainer.py --help`"
                )
                raise RefrainInputError(f"--{name}", "unknown flag", hint)
            if not has_value:
                if index >= len(args):
                    raise RefrainInputError(f"--{name}", "flag needs a value", f"write --{name} VALUE")
                value = args[index]
                index += 1
            overrides.append(f"{ACESTEP_FLAGS[name]}={quote_value(value)}")
        else:
            overrides.append(arg)
    return overrides


# Hydra flags followed by a value (`--cfg job`, `-p task`); the others stand alone.
_VALUED_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--shell-completion",
    "-sc",
}


def config_overrides(overrides: Sequence[str]) -> list[str]:
    """The config overrides of a command line, without Hydra's own flags and their values."""
    out: list[str] = []
    skip = False
    for item in overrides:
        if skip:
            skip = False
            continue
        flag = item.split("=", 1)[0]
        if flag in HYDRA_FLAGS:
            skip = flag in _VALUED_FLAGS and "=" not in item
            continue
        out.append(item)
    return out


def help_text() -> str:
    """The --help page: both command-line styles, the flag table and the config groups."""
    from refrain.config import conf_dir, group_options

    groups = [
        "experiment",
        "model/vae",
        "model/dit",
        "task",
        "data",
        "trainer",
        "logger",
        "callbacks",
        "repa",
        "lora",
    ]
    lines = [
        "usage: python trainer.py [--FLAG VALUE ...] [key=value ...] [group=option ...]",
        "",
        "Train a refrain model. Two styles, freely mixed:",
        "  Hydra overrides:   python trainer.py experiment=vae_mp3 dataset_path=data/my_set trainer.max_steps=1000",
        "  ACE-Step flags:    python trainer.py experiment=vae_mp3 --dataset_path data/my_set --max_steps 1000",
        "",
        "ACE-Step flags and the config key each one sets:",
    ]
    lines += [f"  --{flag:<36} {key}" for flag, key in ACESTEP_FLAGS.items()]
    lines += [f"  --{flag:<36} {key}=true ({SWITCH_HELP[flag]})" for flag, key in SWITCH_FLAGS.items()]
    lines += ["", f"Config groups (conf/ at {conf_dir()}):"]
    lines += [f"  {group:<12} {', '.join(group_options(group))}" for group in groups if group_options(group)]
    lines += [
        "",
        "Hydra's own flags work too: --cfg job (print the composed config), -m (multirun), --hydra-help.",
        "Select several loggers with logger=[tensorboard,csv]; drop a callback with callbacks.progress=null.",
        "Each run has its own folder, exps/<exp_name> (a -m sweep: exps/<exp_name>/job<N>); a folder that holds",
        "checkpoints is only continued with --ckpt_path <folder>/checkpoints/last.ckpt.",
    ]
    return "\n".join(lines)


def check_value_types(cfg: Mapping[str, Any], overrides: Sequence[str]) -> None:
    """A number or switch given a word (`trainer.max_steps=abc`, `--learning_rate fast`) is a one-line error.

    Hydra types a value by its spelling, so a word arrives as a string; the key's default (composed without
    that override, only that key resolved) says what was meant. Keys whose default is null or a string are
    left to their consumers.
    """
    from omegaconf import OmegaConf

    from refrain.config import compose_config

    words = {}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and not key.startswith(("~", "+")) and "/" not in key and key not in WORDS_ALLOWED:
            value = _select(cfg, key)
            if isinstance(value, str):
                words[key] = (item, value)
    if not words:
        return
    kept = [o for o in overrides if o not in {item for item, _ in words.values()}]
    defaults = compose_config(kept)
    kinds = {bool: "true or false", int: "an integer", float: "a number"}
    for key, (_, value) in words.items():
        try:
            default = OmegaConf.select(defaults, key, default=None)
        except Exception:  # noqa: BLE001 - an interpolation that needs an input left out here: unknown type
            continue
        kind = kinds.get(type(default))
        if kind is not None:
            flag = next((f"--{f} / " for f, k in ACESTEP_FLAGS.items() if k == key), "")
            raise RefrainInputError(
                f"{flag}{key}",
                f"{value!r} is not {kind} (default {default!r})",
                f"write {key}=<{kind}>, e.g. {key}={default!r}",
            )


def _select(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


@contextmanager
def one_line_errors() -> Iterator[None]:
    """The one place a run's errors become one line: bad input (even under Hydra's or OmegaConf's wrappers,
    exit 2) and a run stopped by non-finite updates (exit 3). Anything else is a bug and keeps its traceback."""
    from refrain.config import input_error_of
    from refrain.training.faults import NonFiniteTrainingError

    try:
        yield
    except NonFiniteTrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(3) from None
    except Exception as error:
        found = input_error_of(error)
        if found is None:
            raise
        print(f"error: {found}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Translate flags, check the overrides compose, then hand over to Hydra's main."""
    import hydra

    from refrain.config import (
        compose_config,
        conf_dir,
        normalize_overrides,
        register_resolvers,
        resolve_checked,
    )

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(help_text())
        return
    try:
        overrides = normalize_overrides(translate_argv(args))
        if not any(o in ("-m", "--multirun") for o in overrides):  # a sweep composes per job
            plain = config_overrides(overrides)
            check_value_types(resolve_checked(compose_config(plain)), plain)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    register_resolvers()

    @hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
    def _run(cfg) -> None:  # type: ignore[no-untyped-def]
        with one_line_errors():
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            from refrain.training.run import train
            from refrain.training.run_folder import sweep_job_dir

            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:  # jobs of one sweep never share a folder
                sweep_job_dir(cfg, int(hydra_cfg.job.num))
            result = train(cfg)
        from lightning.pytorch.utilities import rank_zero_only

        if rank_zero_only.rank != 0:  # under DDP every rank returns here; the summary is said once
            return
        print(f"run folder: {result.run_dir}")
        if result.last_checkpoint:
            print(f"last checkpoint: {result.last_checkpoint}")

    saved, sys.argv = sys.argv, [sys.argv[0], *overrides]
    try:
        _run()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
