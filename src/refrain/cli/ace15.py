"""``refrain-ace15 {vae,lora,export}``: move between an ACE-Step 1.5 release and refrain.

- ``vae``: the release's ``vae/`` (diffusers' ``AutoencoderOobleck``, 48 kHz, hop 1920, 25 frames/s) as a
  refrain VAE bundle, so a dataset's cached latents are the ones ACE-Step 1.5 was trained on;
- ``lora``: a refrain LoRA adapter folder as the file ``AceStepPipeline.load_lora_weights`` reads;
- ``export``: the release with a LoRA merged in (``--adapter``) or a full fine-tune's weights (``--ckpt``)
  as a new folder in diffusers' layout that ``AceStepPipeline.from_pretrained`` opens.

The release folder is only ever read; outputs are written atomically.
"""

from __future__ import annotations

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
    return save_release_vae(
        AutoencoderOobleck.from_pretrained(root / "vae", use_safetensors=True), source, output, overwrite
    )


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
    checkpoint_dir: str | Path,
    output: str | Path,
    adapter: str | Path | None = None,
    ckpt: str | Path | None = None,
    overwrite: bool = False,
    use_ema: bool = True,
) -> Path:
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
    checkpoint: str | Path,
    output: str | Path,
    overwrite: bool = False,
    use_ema: bool = True,
    release: str | Path | None = None,
) -> Path:
    """``refrain-export --kind dit`` of a model/dit=ace15 run: the release with the run's weights, as a
    diffusers folder (refrain-infer --bundle and AceStepPipeline.from_pretrained open it)."""
    if release is None:
        from refrain.bundles.export import checkpoint_config, load_checkpoint

        release = release_of_run(checkpoint_config(load_checkpoint(checkpoint), checkpoint)[0])
    if release is None:
        raise RefrainInputError(
            checkpoint, "is not a checkpoint of a model/dit=ace15 run", "use refrain-export"
        )
    return export_release(release, output, ckpt=checkpoint, overwrite=overwrite, use_ema=use_ema)


def main(argv: Sequence[str] | None = None) -> None:
    from refrain.cli.release_tools import release_parser, report_written

    release = "the ACE-Step 1.5 release folder (diffusers layout)"
    parser, sub = release_parser("refrain-ace15", __doc__.splitlines()[0], release)
    lora = sub.add_parser("lora", help="a refrain LoRA adapter folder as diffusers' LoRA file")
    lora.add_argument("--checkpoint_dir", required=True, help="the release the adapter was trained on")
    lora.add_argument("--adapter", required=True, help="the adapter folder (exps/<name>/adapter)")
    lora.add_argument("--output", required=True, help="folder for pytorch_lora_weights.safetensors")
    args = parser.parse_args(argv)

    def write() -> Path:
        if args.command == "vae":
            return release_vae_bundle(args.checkpoint_dir, args.output, args.overwrite)
        if args.command == "lora":
            return release_lora(args.checkpoint_dir, args.adapter, args.output)
        return export_release(args.checkpoint_dir, args.output, args.adapter, args.ckpt, args.overwrite)

    report_written(write)


if __name__ == "__main__":
    main()
