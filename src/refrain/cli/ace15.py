"""``python -m refrain.cli.ace15 {vae,lora,export}``: move between an ACE-Step 1.5 release and refrain.

- ``vae``: the release's ``vae/`` (diffusers' ``AutoencoderOobleck``, 48 kHz, hop 1920, 25 frames/s) as a
  refrain VAE bundle, so a dataset's cached latents are the ones ACE-Step 1.5 was trained on;
- ``lora``: a refrain LoRA adapter folder as the file ``AceStepPipeline.load_lora_weights`` reads;
- ``export``: the release with a LoRA merged in (``--adapter``) or a full fine-tune's weights (``--ckpt``)
  as a new folder in diffusers' layout that ``AceStepPipeline.from_pretrained`` opens.

The release folder is only ever read; outputs are written atomically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError


def release_vae_bundle(checkpoint_dir: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write ``checkpoint_dir/vae`` as a VAE bundle at ``output`` (hashed manifest, nothing else changed)."""
    from diffusers import AutoencoderOobleck

    from refrain.cli.release_tools import save_release_vae
    from refrain.models.backbones.ace15 import check_release_folder

    root = check_release_folder(checkpoint_dir)
    if not (root / "vae" / "config.json").is_file():
        raise RefrainInputError(
            root / "vae", "missing (no config.json)", "download the release's vae/ folder too"
        )
    source = {"ace15_release": str(root.resolve())}
    return save_release_vae(AutoencoderOobleck.from_pretrained(root / "vae"), source, output, overwrite)


def release_lora(checkpoint_dir: str | Path, adapter: str | Path, output: str | Path) -> Path:
    """A refrain adapter folder (PEFT) -> ``output/pytorch_lora_weights.safetensors`` for diffusers."""
    from peft import PeftModel

    from refrain.lora.adapters import read_adapter_spec
    from refrain.models.backbones.ace15 import load_ace15
    from refrain.models.backbones.ace15_lora import export_diffusers_lora

    read_adapter_spec(adapter)  # one-line error for a folder that is not an adapter
    peft = PeftModel.from_pretrained(load_ace15(checkpoint_dir), str(adapter))
    return export_diffusers_lora(peft, output)


def trained_backbone(
    checkpoint_dir: str | Path, adapter: str | Path | None, ckpt: str | Path | None, use_ema: bool = True
) -> Any:
    """The release's backbone with a LoRA merged in or a full fine-tune's weights (EMA when kept) loaded."""
    from refrain.cli.release_tools import with_trained_weights
    from refrain.models.backbones.ace15 import load_ace15

    hint = "model/dit=ace15 run over the same --checkpoint_dir"
    return with_trained_weights(load_ace15(checkpoint_dir), adapter, ckpt, use_ema, hint)


def export_release(
    checkpoint_dir: str | Path, output: str | Path, adapter: str | Path | None = None,
    ckpt: str | Path | None = None, overwrite: bool = False, use_ema: bool = True,
) -> Path:  # fmt: skip
    """A new diffusers folder: the release's text encoder, tokenizer, VAE and scheduler, the trained DiT."""
    from diffusers import AceStepPipeline

    from refrain.cli.release_tools import check_export_target, quiet_libraries
    from refrain.fileio import atomic_folder
    from refrain.models.backbones.ace15 import check_release_folder

    root = check_release_folder(checkpoint_dir)
    target = check_export_target(adapter, ckpt, output, overwrite)
    with quiet_libraries():  # the command prints one line: no progress bars, no "non-standard module" notes
        model = trained_backbone(root, adapter, ckpt, use_ema)
        pipe = AceStepPipeline.from_pretrained(
            root, transformer=model.transformer, condition_encoder=model.condition_encoder
        )
        with atomic_folder(target) as staging:
            pipe.save_pretrained(staging, safe_serialization=True)
    return target



def release_of_run(config: Mapping[str, Any]) -> str | None:
    """The release folder a run's config trained from, when its model is ACE-Step 1.5 (else None)."""
    spec = (config.get("model") or {}).get("dit") or {}
    if not isinstance(spec, Mapping) or spec.get("_target_") != "refrain.models.backbones.ace15.load_ace15":
        return None
    return str(spec.get("checkpoint_dir") or config.get("checkpoint_dir") or "")


def export_run(
    checkpoint: str | Path, output: str | Path, overwrite: bool = False, use_ema: bool = True,
    release: str | Path | None = None,
) -> Path:  # fmt: skip
    """``refrain-export --kind dit`` of a model/dit=ace15 run: the release with the run's weights, as a
    diffusers folder (refrain-infer --bundle and AceStepPipeline.from_pretrained open it)."""
    if release is None:
        from refrain.bundles.export import checkpoint_config, load_checkpoint

        release = release_of_run(checkpoint_config(load_checkpoint(checkpoint), checkpoint)[0])
    if release is None:
        raise RefrainInputError(checkpoint, "is not a checkpoint of a model/dit=ace15 run", "use refrain-export")
    return export_release(release, output, ckpt=checkpoint, overwrite=overwrite, use_ema=use_ema)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m refrain.cli.ace15", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    vae = sub.add_parser("vae", help="write the release's vae/ as a refrain VAE bundle")
    vae.add_argument(
        "--checkpoint_dir", required=True, help="the ACE-Step 1.5 release folder (diffusers layout)"
    )
    vae.add_argument("--output", required=True, help="bundle folder to create")
    vae.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    lora = sub.add_parser("lora", help="a refrain LoRA adapter folder as diffusers' LoRA file")
    lora.add_argument("--checkpoint_dir", required=True, help="the release the adapter was trained on")
    lora.add_argument("--adapter", required=True, help="the adapter folder (exps/<name>/adapter)")
    lora.add_argument("--output", required=True, help="folder for pytorch_lora_weights.safetensors")
    export = sub.add_parser("export", help="the release with trained weights, as a new diffusers folder")
    export.add_argument("--checkpoint_dir", required=True, help="the release the run started from")
    export.add_argument("--adapter", default=None, help="a LoRA adapter folder to merge in")
    export.add_argument(
        "--ckpt", default=None, help="a full fine-tune's last.ckpt (its EMA weights when kept)"
    )
    export.add_argument("--output", required=True, help="folder to create")
    export.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "vae":
            out = release_vae_bundle(args.checkpoint_dir, args.output, args.overwrite)
        elif args.command == "lora":
            out = release_lora(args.checkpoint_dir, args.adapter, args.output)
        else:
            out = export_release(args.checkpoint_dir, args.output, args.adapter, args.ckpt, args.overwrite)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
