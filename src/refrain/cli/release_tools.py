"""What the commands that move between a released model's folder and refrain share.

``refrain-ace15`` and ``refrain-stable-audio`` do the same three things for their release: write its VAE
as a refrain VAE bundle, load the backbone with a run's trained weights (a LoRA adapter merged in or a
full fine-tune's checkpoint), and write a diffusers folder. The backbone-specific parts (which loader,
which pipeline class) stay in each command; the steps and their one-line errors live here once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from refrain.errors import RefrainInputError


def save_release_vae(autoencoder: Any, source: dict[str, str], output: str | Path, overwrite: bool) -> Path:
    """The release's ``AutoencoderOobleck`` as a VAE bundle; ``source`` names the release in its config."""
    from refrain.bundles.vae import save_vae_bundle
    from refrain.models.backbones.common import public_config

    shape = {k: list(v) if isinstance(v, tuple) else v for k, v in public_config(autoencoder.config).items()}
    config = {"source": source, "model": {"vae": shape}}
    return save_vae_bundle(output, autoencoder, config, overwrite=overwrite)


def with_trained_weights(
    model: nn.Module, adapter: str | Path | None, ckpt: str | Path | None, use_ema: bool, run_hint: str
) -> nn.Module:
    """``model`` (the release) with a LoRA adapter merged in and/or a full fine-tune's weights loaded.

    A checkpoint's EMA weights are used when it kept them and ``use_ema``; ``run_hint`` says in the error
    which run's ``last.ckpt`` fits this release.
    """
    if adapter is not None:
        from peft import PeftModel

        from refrain.lora.adapters import read_adapter_spec

        read_adapter_spec(adapter)  # one-line error for a folder that is not an adapter
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if ckpt is not None:
        import torch

        state = torch.load(ckpt, weights_only=True, map_location="cpu").get("state_dict") or {}
        ema = use_ema and any(k.startswith("ema.shadow.") for k in state)
        prefix = "ema.shadow." if ema else "model."
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        missing = sorted(set(model.state_dict()) - set(own))
        if missing or len(own) != len(model.state_dict()):
            raise RefrainInputError(
                ckpt,
                f"not a full fine-tune of this release ({len(missing)} weights missing, e.g. {missing[:1]})",
                f"pass the last.ckpt of a {run_hint}",
            )
        model.load_state_dict(own, strict=True)
    return model


def check_export_target(
    adapter: str | Path | None, ckpt: str | Path | None, output: str | Path, overwrite: bool
) -> Path:
    """The export's output folder, after the checks: exactly one of adapter and ckpt, nothing overwritten."""
    target = Path(output)
    if (adapter is None) == (ckpt is None):
        raise RefrainInputError("export", "needs exactly one of --adapter and --ckpt", "pass one of them")
    if target.exists() and not overwrite:
        raise RefrainInputError(target, "already exists", "choose a new output folder or pass --overwrite")
    return target


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """diffusers' and transformers' warnings and progress bars off for the block, restored after it."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        for library, enabled in zip((diffusers_logging, transformers_logging), bars, strict=True):
            if enabled:
                library.enable_progress_bar()


def release_parser(prog: str, description: str, release: str) -> tuple[argparse.ArgumentParser, Any]:
    """The command line both release tools share: ``vae`` and ``export`` with their flags. Returns the parser
    and its subparsers, to which each tool adds its own commands (``lora``, ``bundle``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    vae = sub.add_parser("vae", help="write the release's vae/ as a refrain VAE bundle")
    vae.add_argument("--checkpoint_dir", required=True, help=release)
    add_output_flags(vae)
    export = sub.add_parser("export", help="the release with trained weights, as a new diffusers folder")
    export.add_argument("--checkpoint_dir", required=True, help="the release the run started from")
    add_trained_weights_flags(export)
    add_output_flags(export)
    return parser, sub


def add_trained_weights_flags(command: argparse.ArgumentParser) -> None:
    """``--adapter`` / ``--ckpt``: the trained weights that go onto the release (``with_trained_weights``)."""
    command.add_argument("--adapter", default=None, help="a LoRA adapter folder to merge in")
    command.add_argument(
        "--ckpt", default=None, help="a full fine-tune's last.ckpt (its EMA weights when kept)"
    )


def add_output_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--output", required=True, help="folder to create")
    command.add_argument("--overwrite", action="store_true", help="replace an existing folder")


def report_written(write: Callable[[], Path]) -> None:
    """Run ``write`` and print ``wrote <folder>``, or the one-line error and exit status 2."""
    try:
        out = write()
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {out}")
