"""``python -m refrain.cli.ace15 vae``: the VAE of an ACE-Step 1.5 release folder as a refrain VAE bundle.

refrain-prepare / refrain-encode / the DiT data read a latent space from a VAE bundle; this writes the
release's own ``vae/`` (diffusers' ``AutoencoderOobleck``, 48 kHz, hop 1920, 25 frames/s) as one, so the
cached latents of a dataset are the latents ACE-Step 1.5 was trained on. The release folder is only read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from refrain.errors import RefrainInputError


def release_vae_bundle(checkpoint_dir: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write ``checkpoint_dir/vae`` as a VAE bundle at ``output`` (hashed manifest, nothing else changed)."""
    from diffusers import AutoencoderOobleck

    from refrain.bundles.vae import save_vae_bundle
    from refrain.models.backbones.ace15 import check_release_folder

    root = check_release_folder(checkpoint_dir)
    if not (root / "vae" / "config.json").is_file():
        raise RefrainInputError(
            root / "vae", "missing (no config.json)", "download the release's vae/ folder too"
        )
    autoencoder = AutoencoderOobleck.from_pretrained(root / "vae")
    shape = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in autoencoder.config.items()
        if not k.startswith("_")
    }
    config = {"source": {"ace15_release": str(root.resolve())}, "model": {"vae": shape}}
    return save_vae_bundle(output, autoencoder, config, overwrite=overwrite)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m refrain.cli.ace15", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    vae = sub.add_parser("vae", help="write the release's vae/ as a refrain VAE bundle")
    vae.add_argument(
        "--checkpoint_dir", required=True, help="the ACE-Step 1.5 release folder (diffusers layout)"
    )
    vae.add_argument("--output", required=True, help="bundle folder to create")
    vae.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    args = parser.parse_args(argv)
    try:
        out = release_vae_bundle(args.checkpoint_dir, args.output, args.overwrite)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"exported vae bundle: {out}")


if __name__ == "__main__":
    main()
