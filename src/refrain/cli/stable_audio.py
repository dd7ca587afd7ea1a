"""``refrain-stable-audio {vae,bundle,export}``: move between a Stable Audio Open release and refrain.

- ``vae``: the release's ``vae/`` (diffusers' ``AutoencoderOobleck``, 44.1 kHz, 64 channels at 21.5 frames/s)
  as a refrain VAE bundle, which ``refrain-prepare``/``--vae_bundle`` encode a dataset with;
- ``bundle``: the release's DiT (optionally with a full fine-tune's ``last.ckpt`` or a LoRA adapter merged
  in) as a refrain DiT bundle: ``refrain-infer --bundle`` samples it and ``--checkpoint_dir`` names it as the
  base of a LoRA run; the bundle records the release folder for the T5 encoder;
- ``export``: the same trained weights as a new diffusers folder that ``StableAudioPipeline`` opens.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError


def release_vae_bundle(checkpoint_dir: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write ``checkpoint_dir/vae`` as a VAE bundle at ``output``."""
    from refrain.cli.release_tools import save_release_vae
    from refrain.models.backbones.stable_audio import check_release_folder
    from refrain.models.vae.weights import load_autoencoder

    root = check_release_folder(checkpoint_dir)
    source = {"stable_audio_open_release": str(root.resolve())}
    return save_release_vae(load_autoencoder(root / "vae"), source, output, overwrite)


def trained_backbone(checkpoint_dir: str | Path, adapter: str | Path | None, ckpt: str | Path | None) -> Any:
    """The release's backbone, with a LoRA merged in or a full fine-tune's weights (EMA when kept) loaded."""
    from refrain.cli.release_tools import with_trained_weights
    from refrain.models.backbones.stable_audio import load_stable_audio

    hint = "model/dit=stable_audio_open run over the same release folder"
    return with_trained_weights(load_stable_audio(checkpoint_dir), adapter, ckpt, True, hint).eval()


def release_dit_bundle(
    checkpoint_dir: str | Path,
    vae_bundle: str | Path,
    output: str | Path,
    adapter: str | Path | None = None,
    ckpt: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """A refrain DiT bundle of the release (or of its trained weights) over ``vae_bundle``."""
    from refrain.bundles.dit import save_dit_bundle, text_encoder_ref
    from refrain.models.backbones.stable_audio import bundle_spec, check_release_folder
    from refrain.text.vocab import PhonemeVocab

    root = check_release_folder(checkpoint_dir).resolve()
    model = trained_backbone(root, adapter, ckpt)
    with tempfile.TemporaryDirectory() as scratch:
        vocab = Path(scratch) / "phoneme_vocab.json"
        PhonemeVocab().save(vocab)  # the model reads no phonemes: an empty vocabulary
        return save_dit_bundle(
            output,
            model.state_dict(),
            bundle_spec(model, text_dir=str(root)),
            vae_bundle,
            vocab,
            text_encoder_ref(None),
            config={"source": {"stable_audio_open_release": str(root)}},
            overwrite=overwrite,
        )


def export_release(
    checkpoint_dir: str | Path,
    output: str | Path,
    adapter: str | Path | None = None,
    ckpt: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """A new diffusers folder: the release's T5, tokenizer, VAE and scheduler with the trained DiT + projection."""
    from diffusers import StableAudioPipeline

    from refrain.cli.release_tools import check_export_target, quiet_libraries
    from refrain.fileio import atomic_folder
    from refrain.models.backbones.stable_audio import check_release_folder

    root = check_release_folder(checkpoint_dir)
    target = check_export_target(adapter, ckpt, output, overwrite)
    model = trained_backbone(root, adapter, ckpt)
    with quiet_libraries():  # diffusers prints the whole module when handed a loaded component
        pipe = StableAudioPipeline.from_pretrained(
            root, transformer=model.transformer, projection_model=model.projection_model, use_safetensors=True
        )
        with atomic_folder(target) as staging:
            pipe.save_pretrained(staging, safe_serialization=True)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    from refrain.cli.release_tools import (
        add_output_flags,
        add_trained_weights_flags,
        release_parser,
        report_written,
    )

    release = "the Stable Audio Open release folder (diffusers layout)"
    parser, sub = release_parser("refrain-stable-audio", __doc__.splitlines()[0], release)
    bundle = sub.add_parser("bundle", help="the release (or its trained weights) as a refrain DiT bundle")
    bundle.add_argument("--checkpoint_dir", required=True, help=release)
    bundle.add_argument("--vae_bundle", required=True, help="the release's VAE as a bundle (the vae command)")
    add_trained_weights_flags(bundle)
    add_output_flags(bundle)
    args = parser.parse_args(argv)

    def write() -> Path:
        if args.command == "vae":
            return release_vae_bundle(args.checkpoint_dir, args.output, args.overwrite)
        if args.command == "bundle":
            if args.adapter is not None and args.ckpt is not None:
                raise RefrainInputError(
                    "bundle", "takes at most one of --adapter and --ckpt", "pass one of them"
                )
            return release_dit_bundle(
                args.checkpoint_dir, args.vae_bundle, args.output, args.adapter, args.ckpt, args.overwrite
            )
        return export_release(args.checkpoint_dir, args.output, args.adapter, args.ckpt, args.overwrite)

    report_written(write)


if __name__ == "__main__":
    main()
