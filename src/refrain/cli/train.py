"""`trainer.py` / `refrain-train`: Hydra overrides, plus ACE-Step's --flag command line translated to them."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence

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
            if name not in ACESTEP_FLAGS:
                close = difflib.get_close_matches(name, ACESTEP_FLAGS, n=3, cutoff=0.5)
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
        "sampler",
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
    lines += ["", f"Config groups (conf/ at {conf_dir()}):"]
    lines += [f"  {group:<12} {', '.join(group_options(group)) or '(none yet)'}" for group in groups]
    lines += [
        "",
        "Hydra's own flags work too: --cfg job (print the composed config), -m (multirun), --hydra-help.",
        "Select several loggers with logger=[tensorboard,csv]; drop a callback with callbacks.progress=null.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Translate flags, check the overrides compose, then hand over to Hydra's main."""
    import hydra

    from refrain.config import compose_config, conf_dir, register_resolvers

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(help_text())
        return
    try:
        overrides = translate_argv(args)
        if not any(o.startswith(tuple(HYDRA_FLAGS)) for o in overrides):
            compose_config(overrides)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    register_resolvers()

    @hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
    def _run(cfg) -> None:  # type: ignore[no-untyped-def]
        from refrain.training.run import train

        try:
            result = train(cfg)
        except RefrainInputError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"run folder: {result.run_dir}")
        if result.last_checkpoint:
            print(f"last checkpoint: {result.last_checkpoint}")

    sys.argv = [sys.argv[0], *overrides]
    _run()


if __name__ == "__main__":
    main()
